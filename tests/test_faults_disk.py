"""A full disk, for real: the data dir on a small tmpfs filled to the last byte. Uploads answer
507 ``storage_full``, the CLI exits 6 with one line, text search keeps answering, nothing
committed is lost or duplicated, and everything works again once space is freed. Needs to mount
a tmpfs (root); skipped elsewhere."""

from __future__ import annotations

import errno
import io
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from blipsearch.config import Settings
from service.indexing import index_paths
from storage.api_keys import create_key
from storage.catalog import open_catalog
from tests.fault_tools import consistent
from tests.helpers import make_image, write_images

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path) -> Path:
    """Write zeros until the disk is full; returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        block = b"\0" * (64 << 10)
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with open(folder / "filler2", "wb", buffering=0) as fh:  # the last bytes a smaller write can still take
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    make_image(seed).save(buf, "PNG")
    return buf.getvalue()


def test_a_full_disk_is_a_storage_problem_and_recovers(small_disk, tmp_path, blip_embedder, tiny_models, monkeypatch):
    data = small_disk / "data"
    s = Settings(
        data_dir=data, model=str(tiny_models["blip-itm"]), batch_size=4, shard_size=4, jpeg_draft=False,
        precision="exact",
    )  # fmt: skip
    images = write_images(tmp_path / "imgs", 6)
    index_paths(s, [images[0].parent], "c", embedder=blip_embedder, progress=False)
    key = create_key(open_catalog(s.catalog_url()), "w", "write")[0]
    auth = {"Authorization": f"Bearer {key}"}
    app = create_app(s)
    app.state.blip._embedders[blip_embedder.model_id] = blip_embedder
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/v1/search/text", json={"query": "a red square", "collection": "c"}).status_code == 200
        filler = _fill(small_disk)

        for seed in (100, 101):  # uploads on a full disk: a storage problem, never a 500
            r = client.post("/v1/collections/c/images", files=[("files", (f"{seed}.png", _png(seed)))], headers=auth)
            assert r.status_code == 507 and r.json()["code"] == "storage_full", r.text
        r = client.post("/v1/search/text", json={"query": "a blue circle", "collection": "c"})
        assert r.status_code == 200, r.text  # searches keep answering

        monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(data))
        monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
        from cli.main import app as cli

        more = write_images(tmp_path / "more", 3, start=50)
        out = CliRunner().invoke(cli, ["index", str(more[0].parent), "-c", "c"])
        assert out.exit_code == 6, (out.exit_code, out.output, out.exception)
        assert "Traceback" not in out.output and "error: " in out.output
        state = consistent(data, "c", [blip_embedder])
        assert state["rows"] == 6  # nothing half committed

        filler.unlink()  # space freed: everything works again
        (small_disk / "filler2").unlink()
        r = client.post("/v1/collections/c/images", files=[("files", ("100.png", _png(100)))], headers=auth)
        assert r.status_code == 200 and len(r.json()["added"]) == 1, r.text
        out = CliRunner().invoke(cli, ["index", str(more[0].parent), "-c", "c"])
        assert out.exit_code == 0, out.output
    state = consistent(data, "c", [blip_embedder])
    assert state["rows"] == 10
