"""Object storage as an indexing source, against a real S3 API on loopback (moto's server):
listing with paging, bounded streaming reads, per-item failures, resume, read-back verified by
hash through the API, import roots, shard lists, timeouts, and credentials never in output."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import threading
import time

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from blipsearch.errors import ForbiddenError, ImageDecodeError, InvalidInputError
from indexer.sources import open_sources
from media.objects import ObjectOptions, read_object, scrub
from media.remote_read import read_unverified
from media.safe_read import read_verified
from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import make_image
from tests.s3server import S3, SECRET

pytestmark = pytest.mark.timeout(300)


def _jpeg(i: int, size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    make_image(i, size).save(buf, "JPEG")
    return buf.getvalue()


def _records(settings, name: str) -> dict[str, dict]:
    rows = Collection.open(settings.data_dir, name).read_table().to_pylist()
    return {r["uri"]: r for r in rows}


@pytest.fixture
def bucket(s3: S3, request) -> str:
    name = f"bkt-{request.node.name[:30].lower().replace('_', '-')}-{time.monotonic_ns() % 10**6}"
    return s3.bucket(name)


def test_a_prefix_is_listed_streamed_and_read_back_verified(s3, bucket, settings, blip_embedder):
    uni = "photos/ünï cödé 写真.jpg"
    long_key = "photos/" + "k" * (1024 - len("photos/") - 4) + ".jpg"  # a 1,024-byte key
    keys = [f"photos/{i:03d}.jpg" for i in range(6)] + [uni, long_key]
    for i, key in enumerate(keys):
        s3.put(bucket, key, _jpeg(i))
    s3.put(bucket, "photos/notes.txt.bin", b"not an image")
    s3.put(bucket, "photos/huge.jpg", _jpeg(50, (1500, 1400)) + b"\0" * 300_000)
    s3.put(bucket, "escape.jpg", _jpeg(60))
    s3.put(bucket, "photos/list.lst", f"s3://{bucket}/photos/a/../../escape.jpg\n".encode())  # '..': never read
    for i in range(120):  # empty "folders" (zero-byte markers) are skipped
        s3.put(bucket, f"photos/empty/{i:04d}/", b"")
    small = settings.model_copy(update={"max_file_bytes": 200_000})

    report = index_paths(small, [f"s3://{bucket}/photos"], "objs", embedder=blip_embedder, progress=False)
    reasons = {f["path"].rsplit("/", 1)[-1]: f["reason"] for f in report.failures}
    assert report.added == len(keys), report.failures
    assert reasons == {"notes.txt.bin": "not_an_image", "huge.jpg": "too_large_file", "list.lst": "not_an_image"}
    listed = index_paths(small, [f"s3://{bucket}/photos/list.lst"], "objs", embedder=blip_embedder, progress=False)
    assert [f["reason"] for f in listed.failures] == ["bad_key"] and listed.added == 0
    recs = _records(settings, "objs")
    assert set(recs) == {f"s3://{bucket}/{k}" for k in keys}  # the record's uri is the object URL

    # Read back through the one verified path, as /file, re-rank, captions and moderation do.
    uri = f"s3://{bucket}/{uni}"
    assert read_verified(uri, recs[uri]["sha256"], 1 << 20) == _jpeg(keys.index(uni))
    assert hashlib.sha256(read_unverified(uri, 1 << 20)).hexdigest() == recs[uri]["sha256"]

    # A re-run over the unchanged bucket embeds nothing and reads no object again: an object
    # rewritten with other bytes of the same size is not even fetched.
    same_size = bytearray(_jpeg(0))
    same_size[-3] ^= 0xFF
    s3.put(bucket, keys[0], bytes(same_size))
    again = index_paths(small, [f"s3://{bucket}/photos"], "objs", embedder=blip_embedder, progress=False)
    assert (again.added, again.updated, again.skipped_duplicates) == (0, 0, len(keys))
    # ... while the changed object no longer reads back as the indexed original.
    from blipsearch.errors import SourceChangedError

    with pytest.raises(SourceChangedError):
        read_verified(f"s3://{bucket}/{keys[0]}", recs[f"s3://{bucket}/{keys[0]}"]["sha256"], 1 << 20)


def test_globs_lists_manifests_and_shard_lists_in_a_bucket(s3, bucket, settings, blip_embedder, tmp_path):
    import webdataset as wds

    for i in range(3):
        s3.put(bucket, f"imgs/{i}.jpg", _jpeg(i))
    s3.put(bucket, "imgs/skip.png", b"x")
    # A file list with a relative key, an absolute URL and a missing object.
    s3.put(bucket, "lists/l.txt", f"../imgs/0.jpg\ns3://{bucket}/imgs/1.jpg\ns3://{bucket}/imgs/gone.jpg\n".encode())
    s3.put(bucket, "lists/m.csv", f"path,label\ns3://{bucket}/imgs/2.jpg,cat\n".encode())
    report = index_paths(
        settings,
        [f"s3://{bucket}/imgs/*.jpg", f"s3://{bucket}/lists/l.txt", f"s3://{bucket}/lists/m.csv"],
        "mix",
        embedder=blip_embedder,
        progress=False,
    )
    by_reason = sorted((f["path"], f["reason"]) for f in report.failures)
    assert (report.added, report.skipped_duplicates) == (3, 2)
    assert by_reason == [("../imgs/0.jpg", "source_error"), (f"s3://{bucket}/imgs/gone.jpg", "missing")]

    # WebDataset shards written by the webdataset library, in a bucket, as a brace list (one missing).
    for s in range(2):
        local = tmp_path / f"{s:05d}.tar"
        with wds.TarWriter(str(local)) as sink:
            for i in range(3):
                sink.write({"__key__": f"s{s}_{i}", "jpg": _jpeg(100 + 10 * s + i), "json": {"n": 10 * s + i}})
        s3.put(bucket, f"shards/{s:05d}.tar", local.read_bytes())
    shards = index_paths(
        settings, [f"s3://{bucket}/shards/{{00000..00002}}.tar"], "shards", embedder=blip_embedder, progress=False
    )
    assert shards.added == 6 and [f["reason"] for f in shards.failures] == ["source_error"]
    assert "00002.tar" in shards.failures[0]["path"] and "missing" in shards.failures[0]["error"]
    recs = _records(settings, "shards")
    uri = f"s3://{bucket}/shards/00001.tar#s1_2.jpg"
    assert json.loads(recs[uri]["metadata"]) == {"n": 12}
    assert read_verified(uri, recs[uri]["sha256"], 1 << 20) == _jpeg(112)
    globbed = index_paths(settings, [f"s3://{bucket}/shards/*.tar"], "shards", embedder=blip_embedder, progress=False)
    assert (globbed.added, globbed.skipped_duplicates) == (0, 6)

    # A brace list of ten million names is refused at once, in one line.
    t0 = time.monotonic()
    with pytest.raises(InvalidInputError, match=r"expands to 10,000,000 names") as err:
        open_sources([f"s3://{bucket}/s/{{0000000..9999999}}.tar"])
    assert time.monotonic() - t0 < 1 and "\n" not in str(err.value)


def test_api_jobs_read_only_import_prefixes(s3, bucket, settings, tiny_models):
    from api.app import create_app
    from storage.api_keys import create_key
    from storage.catalog import open_catalog

    for i in range(3):
        s3.put(bucket, f"allowed/{i}.jpg", _jpeg(200 + i))
    s3.put(bucket, "secret/s.jpg", _jpeg(299))
    s3.put(bucket, "allowed/m.csv", f"path\ns3://{bucket}/secret/s.jpg\n0.jpg\n".encode())
    s3.put(bucket, "allowed/l.txt", f"s3://{bucket}/allowed/../secret/s.jpg\n".encode())
    cfg = settings.model_copy(
        update={"model": str(tiny_models["blip-itm"]), "import_prefixes": [f"s3://{bucket}/allowed"]}
    )
    key = create_key(open_catalog(cfg.catalog_url()), "w", "write")[0]
    h = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(cfg), raise_server_exceptions=False) as client:
        for paths, status in (
            ([f"s3://{bucket}/secret"], 403),
            ([f"s3://{bucket}/allowedx/a.jpg"], 403),
            ([f"s3://{bucket}/allowed/../secret"], 403),
            (["pipe:cat /etc/passwd"], 403),
            ([f"https://example.com/{bucket}/allowed/l.txt"], 422),
        ):
            r = client.post("/v1/jobs/index", json={"collection": "api", "paths": paths}, headers=h)
            assert r.status_code == status, (paths, r.text)
        r = client.post(
            "/v1/jobs/index",
            json={
                "collection": "api",
                "paths": [f"s3://{bucket}/allowed/{{0..2}}.jpg", f"s3://{bucket}/allowed/m.csv"],
            },
            headers=h,
        )
        assert r.status_code == 202, r.text
        job = _wait(client, r.json()["id"])
        assert job["state"] == "succeeded" and job["counts"]["added"] == 3, job
        assert [f["error"] for f in job["failures"]] == ["outside the import roots"]
        r = client.post(
            "/v1/jobs/index", json={"collection": "api", "paths": [f"s3://{bucket}/allowed/l.txt"]}, headers=h
        )
        job = _wait(client, r.json()["id"])
        assert job["counts"]["failed"] == 1 and job["failures"][0]["error"] == "outside the import roots"
        # /file reads the object back (hash-checked); a deleted object is a 404, not a 500.
        coll = Collection.open(cfg.data_dir, "api")
        rows = {r["uri"]: r["id"] for r in coll.read_table(["id", "uri"]).to_pylist()}
        rid = rows[f"s3://{bucket}/allowed/1.jpg"]
        got = client.get(f"/v1/collections/api/images/{rid}/file")
        assert got.status_code == 200 and got.content == _jpeg(201)
        s3.client().delete_object(Bucket=bucket, Key="allowed/1.jpg")
        assert client.get(f"/v1/collections/api/images/{rid}/file").status_code == 404
        s3.put(bucket, "allowed/1.jpg", _jpeg(777))
        assert client.get(f"/v1/collections/api/images/{rid}/file").status_code == 409


def _wait(client, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still running")


def test_a_server_killed_mid_run_gives_per_item_failures_and_the_run_resumes(
    s3, bucket, settings, blip_embedder, monkeypatch
):
    from moto.server import ThreadedMotoServer

    from indexer.options import IndexOptions
    from indexer.pipeline import IndexPipeline
    from tests.s3server import free_port

    for i in range(8):
        s3.put(bucket, f"many/{i:02d}.jpg", _jpeg(300 + i))
    # A second server process-thread over the same in-memory store: the one this run loses.
    port = free_port()
    other = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    other.start()
    monkeypatch.setenv("BLIPSEARCH_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("BLIPSEARCH_OBJECT_RETRIES", "0")
    monkeypatch.setenv("BLIPSEARCH_OBJECT_TIMEOUT_S", "2")
    sources = open_sources([f"s3://{bucket}/many"])  # listed while the server is up
    items = iter(sources)
    first = [next(items) for _ in range(3)]
    coll = Collection.create(settings.data_dir, "killed", model=blip_embedder.describe())
    part = IndexPipeline(coll, blip_embedder, IndexOptions(batch_size=2, shard_size=2)).run(first)
    assert part.added == 3
    other.stop()  # the server dies mid-run: the rest are per-item failures, bounded in time
    t0 = time.monotonic()
    rest = IndexPipeline(coll, blip_embedder, IndexOptions(batch_size=2, shard_size=2)).run(items)
    assert rest.added == 0 and rest.failed == 5 and time.monotonic() - t0 < 60
    assert {f["reason"] for f in rest.failures} <= {"unreachable", "timeout"}
    assert all(SECRET not in f["error"] for f in rest.failures)
    # Resume against a live endpoint: the committed three are not read again, the rest are added.
    monkeypatch.setenv("BLIPSEARCH_S3_ENDPOINT_URL", s3.endpoint)
    s3.client().delete_object(Bucket=bucket, Key="many/00.jpg")
    s3.put(bucket, "many/00.jpg", _jpeg(300))  # same bytes: skipped by its listed size, unread
    resumed = index_paths(settings, [f"s3://{bucket}/many"], "killed", embedder=blip_embedder, progress=False)
    assert (resumed.added, resumed.skipped_duplicates, resumed.failed) == (5, 3, 0)
    assert len(_records(settings, "killed")) == 8


class _Hang:
    """An endpoint that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_a_hanging_endpoint_times_out_in_one_line_without_credentials(s3, bucket, monkeypatch, tmp_path, tiny_models):
    from cli.main import app

    hang = _Hang()
    try:
        monkeypatch.setenv("BLIPSEARCH_S3_ENDPOINT_URL", f"http://127.0.0.1:{hang.port}")
        monkeypatch.setenv("BLIPSEARCH_OBJECT_TIMEOUT_S", "1")
        monkeypatch.setenv("BLIPSEARCH_OBJECT_RETRIES", "0")
        t0 = time.monotonic()
        with pytest.raises(ImageDecodeError) as err:
            read_object(f"s3://{bucket}/x.jpg", 1000, ObjectOptions.from_env())
        assert getattr(err.value, "reason", None) in ("timeout", "unreachable") and time.monotonic() - t0 < 20
        monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
        result = CliRunner().invoke(app, ["index", f"s3://{bucket}/photos", "--collection", "h"])
        out = result.stdout + (result.stderr or "")
        assert result.exit_code == 2, out
        assert len(out.strip().splitlines()) == 1 and "Traceback" not in out
        assert SECRET not in out and "AKIATESTKEYID" not in out
        # pipe: inputs run only behind --allow-pipe.
        refused = CliRunner().invoke(app, ["index", "pipe:cat /dev/null", "--collection", "h"])
        assert refused.exit_code == 2 and "--allow-pipe" in refused.stdout + (refused.stderr or "")
    finally:
        hang.close()


def test_pipe_shards_from_the_cli_behind_the_flag(settings, blip_embedder, tmp_path):
    shard = tmp_path / "p.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(2):
            data = _jpeg(400 + i)
            info = tarfile.TarInfo(f"k{i}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InvalidInputError, match="--allow-pipe"):
        open_sources([f"pipe:cat {shard}"])
    report = index_paths(
        settings, [f"pipe:cat {shard}"], "pipe", embedder=blip_embedder, progress=False, allow_pipe=True
    )
    assert report.added == 2
    failed = index_paths(settings, ["pipe:exit 3"], "pipe", embedder=blip_embedder, progress=False, allow_pipe=True)
    assert failed.added == 0 and "exited with status 3" in failed.failures[-1]["error"]


def test_credentials_are_scrubbed_from_messages(s3):
    signed = "https://bkt.s3.amazonaws.com/k.jpg?X-Amz-Credential=AKIA&X-Amz-Signature=abcd1234"
    text = f"boom {SECRET} at https://user:pa55word@host/x and {signed} aws_secret_access_key={SECRET}"
    out = scrub(text)
    assert SECRET not in out and "pa55word" not in out and "abcd1234" not in out
    assert "https://***@host/x" in out
    with pytest.raises(ForbiddenError):
        from indexer.sources.bulk import confine_objects

        confine_objects(["s3://bkt/allowed/../x"], ["s3://bkt/allowed"])


def test_a_manifest_read_over_http_names_objects(s3, bucket, settings, blip_embedder, tmp_path):
    import functools
    import http.server

    for i in range(2):
        s3.put(bucket, f"web/{i}.jpg", _jpeg(500 + i))
    (tmp_path / "m.csv").write_text(f"uri,label\ns3://{bucket}/web/0.jpg,a\ns3://{bucket}/web/1.jpg,b\nrel.jpg,c\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/m.csv"
        report = index_paths(settings, [url], "web", embedder=blip_embedder, progress=False)
        assert report.added == 2 and [f["path"] for f in report.failures] == ["rel.jpg"]
        labels = {json.loads(r["metadata"])["label"] for r in _records(settings, "web").values()}
        assert labels == {"a", "b"}
        with pytest.raises(InvalidInputError, match="http"):  # images are never fetched over http(s)
            open_sources([f"http://127.0.0.1:{httpd.server_address[1]}/x.jpg"])
    finally:
        httpd.shutdown()
