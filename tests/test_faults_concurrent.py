"""Concurrent writers on one collection: two re-embeds (two processes), CLI indexing while the
API takes uploads (small-shard merging on), a collection deleted while uploads arrive. Every
acknowledged record is kept exactly once, nothing answers 500, and the collection opens and
searches afterwards."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from blipsearch.config import Settings
from indexer.reembed import reembed
from service.indexing import index_paths
from storage.api_keys import create_key
from storage.catalog import open_catalog
from storage.collection import Collection
from tests.fault_tools import cli, consistent
from tests.helpers import make_image, write_images

pytestmark = pytest.mark.slow


def _settings(data: Path, tiny_models) -> Settings:
    return Settings(
        data_dir=data, model=str(tiny_models["blip-itm"]), batch_size=4, shard_size=3, decode_workers=1,
        jpeg_draft=False, precision="exact", decode_mode="thread", merge_small_shards=True, small_shard_rows=4,
    )  # fmt: skip


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    make_image(seed).save(buf, "PNG")
    return buf.getvalue()


def test_a_second_reembed_process_is_refused_while_one_runs(tmp_path, tiny_models, blip_embedder, blip2_embedder):
    s = _settings(tmp_path / "data", tiny_models)
    index_paths(s, [write_images(tmp_path / "in", 9)[0].parent], "c", embedder=blip_embedder, progress=False)
    before = consistent(s.data_dir, "c", [blip_embedder])
    other: list = []

    def during(_: int) -> None:  # while this re-embed holds the collection, another process tries
        if not other:
            other.append(cli(["reembed", "-c", "c", "--model", str(tiny_models["blip2-itm"])], s.data_dir))

    reembed(s, "c", str(tiny_models["blip2-itm"]), embedder=blip2_embedder, progress=False, on_shard=during)
    assert other[0].returncode == 4, other[0].stderr[-2000:]
    assert "already running" in other[0].stderr and "Traceback" not in other[0].stderr
    after = consistent(s.data_dir, "c", [blip2_embedder])
    assert after["ids"] == before["ids"] and after["shas"] == before["shas"]


def test_cli_index_while_the_api_takes_uploads(tmp_path, tiny_models, blip_embedder):
    s = _settings(tmp_path / "data", tiny_models)
    index_paths(s, [write_images(tmp_path / "seed", 2)[0].parent], "c", embedder=blip_embedder, progress=False)
    cli_images = write_images(tmp_path / "cli", 12, start=100)
    key = create_key(open_catalog(s.catalog_url()), "w", "write")[0]
    app = create_app(s)
    app.state.blip._embedders[blip_embedder.model_id] = blip_embedder
    acked: set[str] = set()
    statuses: list[int] = []
    with TestClient(app, raise_server_exceptions=False) as client:
        proc_out: list = []
        runner = threading.Thread(
            target=lambda: proc_out.append(
                cli(
                    ["index", str(cli_images[0].parent), "-c", "c", "--shard-size", "2", "--batch-size", "2"],
                    s.data_dir,
                )
            )
        )
        runner.start()
        seed = 500
        while runner.is_alive() or seed < 510:  # uploads (one shard each, merged) all along the CLI run
            data = _png(seed)
            r = client.post(
                "/v1/collections/c/images",
                files=[("files", (f"{seed}.png", data))],
                headers={"Authorization": f"Bearer {key}"},
            )
            statuses.append(r.status_code)
            if r.status_code == 200:
                acked.add(hashlib.sha256(data).hexdigest())
            seed += 1
        runner.join()
    assert proc_out[0].returncode == 0, proc_out[0].stderr[-3000:]
    assert set(statuses) == {200}
    state = consistent(s.data_dir, "c", [blip_embedder])
    cli_shas = {hashlib.sha256(p.read_bytes()).hexdigest() for p in cli_images}
    assert acked | cli_shas <= state["shas"] and state["rows"] == 2 + len(cli_shas) + len(acked)


def test_delete_a_collection_while_uploads_arrive(tmp_path, tiny_models, blip_embedder):
    s = _settings(tmp_path / "data", tiny_models)
    index_paths(s, [write_images(tmp_path / "seed", 2)[0].parent], "c", embedder=blip_embedder, progress=False)
    catalog = open_catalog(s.catalog_url())
    write, admin = create_key(catalog, "w", "write")[0], create_key(catalog, "a", "admin")[0]
    app = create_app(s)
    app.state.blip._embedders[blip_embedder.model_id] = blip_embedder
    # (started after the delete returned?, status): a request in flight when the delete ran may
    # still answer 200 after it (its commit came first); one that starts later must see 404.
    outcomes: list[tuple[bool, int]] = []
    with TestClient(app, raise_server_exceptions=False) as client:
        stop, deleted = threading.Event(), threading.Event()

        def upload() -> None:
            seed = 700
            while not stop.is_set():
                after = deleted.is_set()
                r = client.post(
                    "/v1/collections/c/images",
                    files=[("files", (f"{seed}.png", _png(seed)))],
                    headers={"Authorization": f"Bearer {write}"},
                )
                outcomes.append((after, r.status_code))
                seed += 1

        threads = [threading.Thread(target=upload) for _ in range(2)]
        for t in threads:
            t.start()
        while len(outcomes) < 3:
            threading.Event().wait(0.05)
        r = client.delete("/v1/collections/c", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 204, r.text
        deleted.set()
        while sum(after for after, _ in list(outcomes)) < 4:
            threading.Event().wait(0.05)
        stop.set()
        for t in threads:
            t.join()
    statuses = [code for _, code in outcomes]
    assert 500 not in statuses and set(statuses) <= {200, 404, 409}, outcomes
    # gone, and not resurrected by a late upload
    assert {code for after, code in outcomes if after} == {404}, outcomes
    assert not Collection.exists(s.data_dir, "c")
