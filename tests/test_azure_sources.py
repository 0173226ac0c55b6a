"""``az://`` containers as an indexing source, against Azurite (Microsoft's Azure Storage emulator,
the npm package ``azurite``) on loopback, reached through adlfs with a connection string from
the environment (the store's own credential chain)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from media.safe_read import read_verified
from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import make_image
from tests.s3server import free_port

pytestmark = pytest.mark.timeout(600)
# Azurite's documented development account (public, the same in every install).
ACCOUNT = "devstoreaccount1"
ROOT = Path(__file__).resolve().parents[1]
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _find_azurite() -> str | None:
    local = Path.home() / ".local" / "bin" / "azurite-blob"  # where ensure_azurite.sh installs without root
    return shutil.which("azurite-blob") or (str(local) if local.is_file() else None)


def _azurite() -> str:
    """Azurite's blob server: installed by scripts/ensure_azurite.sh (run here too when it is
    missing). Skips only where npm is absent; with npm, a missing Azurite is a failure."""
    exe = _find_azurite()
    if exe is None and shutil.which("npm") is not None:
        subprocess.run([str(ROOT / "scripts" / "ensure_azurite.sh")], check=False, timeout=600)
        exe = _find_azurite()
    if exe is None:
        if shutil.which("npm") is None:
            pytest.skip("Azurite needs npm (Node.js), which is not installed: az:// is not tested here")
        pytest.fail("npm is here but Azurite did not install: see /tmp/blipsearch-azurite-install.log")
    return exe


@pytest.fixture
def azurite(tmp_path, monkeypatch) -> Iterator[str]:
    pytest.importorskip("adlfs")
    exe = _azurite()
    port = free_port()
    args = ["--silent", "--skipApiVersionCheck", "--loose", "--location", str(tmp_path / "azurite")]
    proc = subprocess.Popen(
        [exe, *args, "--blobHost", "127.0.0.1", "--blobPort", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("Azurite did not start")
                time.sleep(0.3)
        conn = (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
        )
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
        import fsspec

        fsspec.filesystem("az").clear_instance_cache()  # clients hold the credentials they started with
        yield conn
    finally:
        proc.terminate()  # Azurite may ignore SIGTERM while requests drain: then it is killed
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        import fsspec

        fsspec.filesystem("az").clear_instance_cache()


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    make_image(i, (40, 30)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.slow
def test_an_azure_container_is_listed_read_and_read_back(azurite, settings, blip_embedder):
    import fsspec

    fs = fsspec.filesystem("az")
    fs.mkdir("photos")
    for i in range(3):
        fs.pipe(f"photos/in/{i}.jpg", _jpeg(1000 + i))
    fs.pipe("photos/in/broken.jpg", b"not an image")
    fs.pipe("photos/list.txt", b"az://photos/in/0.jpg\naz://photos/in/gone.jpg\n")

    report = index_paths(settings, ["az://photos/in"], "az", embedder=blip_embedder, progress=False)
    assert report.added == 3 and [f["reason"] for f in report.failures] == ["not_an_image"], report.failures
    rows = {r["uri"]: r for r in Collection.open(settings.data_dir, "az").read_table().to_pylist()}
    assert set(rows) == {f"az://photos/in/{i}.jpg" for i in range(3)}  # the record's uri is the blob URL
    uri = "az://photos/in/2.jpg"
    data = read_verified(uri, rows[uri]["sha256"], 1 << 20)  # as /file, thumbnails and re-rank read it
    assert data == _jpeg(1002) and hashlib.sha256(data).hexdigest() == rows[uri]["sha256"]

    listed = index_paths(settings, ["az://photos/list.txt"], "az", embedder=blip_embedder, progress=False)
    assert (listed.added, listed.skipped_duplicates) == (0, 1)
    assert [(f["path"], f["reason"]) for f in listed.failures] == [("az://photos/in/gone.jpg", "missing")]
    assert all(ACCOUNT_KEY not in f["error"] for f in [*report.failures, *listed.failures])
    again = index_paths(settings, ["az://photos/in"], "az", embedder=blip_embedder, progress=False)
    assert (again.added, again.skipped_duplicates) == (0, 3)  # an unchanged container embeds nothing
    assert os.environ["AZURE_STORAGE_CONNECTION_STRING"] == azurite
