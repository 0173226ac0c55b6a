"""``reembed``: a new version under another model, built while the old one serves, then an
atomic swap; ids, captions and metadata are kept; writes made meanwhile are not lost."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from blipsearch.errors import ConflictError, StorageError
from indexer.reembed import reembed
from service.indexing import index_paths
from storage import versions
from storage.collection import Collection
from tests.helpers import write_images


@pytest.fixture
def small_shards(settings):
    return settings.model_copy(update={"shard_size": 4, "decode_mode": "thread"})


def _manifest_csv(tmp_path, images):
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "tag"])
        for i, p in enumerate(images):
            w.writerow([str(p), f"t{i}"])
    return tmp_path / "m.csv"


def test_reembed_swaps_atomically_and_keeps_records(small_shards, blip_embedder, blip2_embedder, tmp_path):
    from api.app import create_app

    s = small_shards
    images = write_images(tmp_path / "in", 12)
    index_paths(s, [_manifest_csv(tmp_path, images)], "r", embedder=blip_embedder, progress=False)
    live = Collection.open(s.data_dir, "r")
    first_ids = sorted(live.read_table(["id"]).column("id").to_pylist())
    live.update_columns(live.manifest.shards[0].file, {first_ids[0]: {"caption": "a kept caption"}})
    live.delete([first_ids[1]])
    old_version = versions.current(s.data_dir, "r")
    assert old_version is not None  # new collections are versioned from the start

    app = create_app(s)
    app.state.blip._embedders[blip_embedder.model_id] = blip_embedder
    app.state.blip._embedders[blip2_embedder.model_id] = blip2_embedder
    extra = write_images(tmp_path / "more", 2, start=100)
    seen_during: list[str] = []

    with TestClient(app) as client:
        body = {"query": "a red square", "collection": "r", "k": 20}
        assert client.post("/v1/search/text", json=body).status_code == 200

        def during(copied: int) -> None:
            if seen_during:
                return
            # The old version still answers, with the old model...
            r = client.post("/v1/search/text", json=body)
            assert r.status_code == 200 and len(r.json()["results"]) == 11
            seen_during.append(app.state.blip.engine("r").embedder.fingerprint)
            # ...and takes writes, which the new version must not lose.
            index_paths(s, [tmp_path / "more"], "r", embedder=blip_embedder, progress=False)
            Collection.open(s.data_dir, "r").delete([first_ids[2]])

        model = str(blip2_embedder.model_id)
        payload = reembed(s, "r", model, embedder=blip2_embedder, progress=False, on_shard=during)
        assert seen_during == [blip_embedder.fingerprint]

        new = Collection.open(s.data_dir, "r")
        m = new.manifest
        assert m.model_fingerprint == blip2_embedder.fingerprint and m.vectors_per_item == 32
        assert versions.current(s.data_dir, "r") == payload["new_version"] != old_version
        rows = {r["id"]: r for r in new.read_table().to_pylist()}
        assert set(rows) == {*first_ids, first_ids[-1] + 1, first_ids[-1] + 2} - {first_ids[1], first_ids[2]}
        assert rows[first_ids[0]]["caption"] == "a kept caption"
        assert json.loads(rows[first_ids[3]]["metadata"]) == {"tag": "t3"}
        by_uri = {r["uri"]: r for r in rows.values()}
        for path in [*images[3:6], extra[0]]:
            want = blip2_embedder.embed_images([Image.open(path).convert("RGB")])[0]
            np.testing.assert_allclose(np.asarray(by_uri[str(path.resolve())]["embedding"]), want, atol=2e-5)
        assert payload["records"] == len(rows) == m.count

        # The live engine moves to the new version (and model) on its next request.
        r = client.post("/v1/search/text", json=body)
        assert r.status_code == 200 and {h["id"] for h in r.json()["results"]} <= set(rows)
        assert len(r.json()["results"]) == len(rows)
        assert app.state.blip.engine("r").embedder.fingerprint == blip2_embedder.fingerprint

    # The old version is kept, marked, and refuses writes from stale handles.
    assert old_version in versions.list_versions(s.data_dir, "r")
    with pytest.raises(ConflictError, match="re-embedded"):
        live.delete([first_ids[3]])
    from typer.testing import CliRunner

    from cli.main import app as cli

    out = CliRunner().invoke(cli, ["reembed", "-c", "r", "--drop-old", "--data-dir", str(s.data_dir), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["dropped_versions"] == [old_version]
    assert versions.list_versions(s.data_dir, "r") == [payload["new_version"]]


def test_reembed_stops_on_missing_files_resumes_and_can_skip(small_shards, blip_embedder, blip2_embedder, tmp_path):
    s = small_shards
    images = write_images(tmp_path / "in", 10)
    index_paths(s, [tmp_path / "in"], "m", embedder=blip_embedder, progress=False)
    images[9].unlink()  # in the last shard

    with pytest.raises(StorageError, match=r"cannot be re-embedded.*--skip-missing"):
        reembed(s, "m", "blip2", embedder=blip2_embedder, progress=False)
    live = Collection.open(s.data_dir, "m")
    assert live.manifest.model_fingerprint == blip_embedder.fingerprint and live.manifest.count == 10
    building = [v for v in versions.list_versions(s.data_dir, "m") if v != versions.current(s.data_dir, "m")]
    assert len(building) == 1  # the half-built version, with its committed shards

    payload = reembed(s, "m", "blip2", embedder=blip2_embedder, progress=False, skip_missing=True)
    assert payload["new_version"] == building[0]  # resumed, not restarted
    assert payload["reembedded"] == 1  # only the last shard was left to do (8 were committed)
    assert [d["uri"] for d in payload["dropped_records"]] == [str(images[9].resolve())]
    new = Collection.open(s.data_dir, "m")
    assert new.manifest.count == 9 and new.manifest.model_fingerprint == blip2_embedder.fingerprint
    with pytest.raises(Exception, match="already embedded"):
        reembed(s, "m", "blip2", embedder=blip2_embedder, progress=False)
