"""``/file`` of a member of a ``.tar.gz`` shard decompresses the shard once: later reads come from
the collection's member cache (verified by sha256, never through a symbolic link, bounded), and a
shard that changed or vanished still answers 409 / 404."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.member_cache import MEMBER_CACHE_DIR, MemberCache
from blipsearch.config import Settings
from media.tar import member_uri
from storage.collection import Collection
from tests.helpers import make_image
from tests.test_merging import MODEL, _rows


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    make_image(seed, (64, 48)).save(buf, "PNG")
    return buf.getvalue()


def _shard(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(client, shard path, members, gzip-stream counter)."""
    shard = (tmp_path / "s.tar.gz").resolve()
    members = {f"m{i}.png": _png(i) for i in range(3)}
    _shard(shard, members)
    settings = Settings(data_dir=tmp_path / "data")
    coll = Collection.create(settings.data_dir, "t", model=MODEL)
    rows, emb = _rows(0, len(members))
    rows["uri"] = [member_uri(shard, n) for n in members]
    rows["sha256"] = [hashlib.sha256(d).hexdigest() for d in members.values()]
    coll.append(rows, emb.astype(np.float32))
    opened = {"n": 0}
    real = gzip.GzipFile.__init__

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened["n"] += 1
        real(self, *args, **kwargs)

    monkeypatch.setattr(gzip.GzipFile, "__init__", counting)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, shard, members, opened, coll


def test_a_second_read_does_not_decompress(served):
    client, _, members, opened, coll = served
    first = client.get("/v1/collections/t/images/1/file")
    assert first.status_code == 200 and first.content == members["m1.png"]
    assert opened["n"] >= 1
    before = opened["n"]
    for _ in range(3):
        again = client.get("/v1/collections/t/images/1/file")
        assert again.status_code == 200 and again.content == members["m1.png"]
    assert opened["n"] == before  # no gzip stream opened for the cached member
    assert len(list((coll.root / MEMBER_CACHE_DIR).glob("*.bin"))) == 1


def test_a_tampered_or_linked_cache_entry_is_not_served(served, tmp_path):
    client, _, members, opened, coll = served
    assert client.get("/v1/collections/t/images/0/file").status_code == 200
    (entry,) = (coll.root / MEMBER_CACHE_DIR).glob("*.bin")
    entry.write_bytes(b"not the member")
    r = client.get("/v1/collections/t/images/0/file")
    assert r.status_code == 200 and r.content == members["m0.png"]  # re-extracted, not the tampered bytes
    other = tmp_path / "other.bin"
    other.write_bytes(members["m0.png"])
    entry.unlink()
    entry.symlink_to(other)  # even with the right bytes, a link is never followed
    before = opened["n"]
    r = client.get("/v1/collections/t/images/0/file")
    assert r.status_code == 200 and r.content == members["m0.png"] and opened["n"] > before
    assert not entry.is_symlink()


def test_a_changed_or_removed_shard_is_not_served_from_the_cache(served):
    client, shard, members, _, _ = served
    assert client.get("/v1/collections/t/images/2/file").status_code == 200
    _shard(shard, {**members, "m2.png": _png(99)})  # rewritten: the member changed
    assert client.get("/v1/collections/t/images/2/file").status_code == 409
    shard.unlink()
    assert client.get("/v1/collections/t/images/2/file").status_code == 404


def test_the_cache_is_bounded(tmp_path):
    shard = (tmp_path / "s.tar.gz").resolve()
    members = {f"m{i}.png": bytes([i]) * 1000 for i in range(5)}
    _shard(shard, members)
    cache = MemberCache(tmp_path / "members", {}, max_bytes=2500)
    for name, data in members.items():
        sha = hashlib.sha256(data).hexdigest()
        assert cache.read(member_uri(shard, name), sha, 1 << 20, lambda d=data: d) == data
        held = sum(p.stat().st_size for p in (tmp_path / "members").glob("*.bin"))
        assert held <= 2500
    assert len(list((tmp_path / "members").glob("*.bin"))) == 2  # the two most recent
