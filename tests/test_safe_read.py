"""A stored uri is read back only while it is the regular file (or tar
member) that was indexed: no symlink anywhere on the path, and the same sha256. Checked for the
helper itself and for its readers: /file, thumbnails, re-ranking, captions, moderation, re-embedding."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from blipsearch.config import Settings
from blipsearch.errors import SourceChangedError, SourceUnavailableError
from media.safe_read import read_verified
from service.engines import open_engine
from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import make_image, write_images


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    make_image(seed, (64, 48)).save(buf, "JPEG")
    return buf.getvalue()


def test_regular_file_with_the_indexed_content_is_read(tmp_path):
    f = tmp_path / "a" / "b.jpg"
    f.parent.mkdir()
    f.write_bytes(b"hello")
    assert read_verified(str(f), _sha(b"hello"), 100) == b"hello"


def test_symlinked_file_is_refused_even_with_the_same_content(tmp_path):
    real = tmp_path / "real.jpg"
    real.write_bytes(b"hello")
    link = tmp_path / "link.jpg"
    link.symlink_to(real)
    with pytest.raises(SourceUnavailableError):
        read_verified(str(link), _sha(b"hello"), 100)
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:x:0:0")
    indexed = tmp_path / "img.jpg"
    indexed.symlink_to(secret)
    with pytest.raises(SourceUnavailableError):
        read_verified(str(indexed), _sha(b"whatever was indexed"), 100)


def test_symlinked_folder_anywhere_on_the_path_is_refused(tmp_path):
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "sub" / "x.jpg").write_bytes(b"abc")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    with pytest.raises(SourceUnavailableError):
        read_verified(str(tmp_path / "alias" / "sub" / "x.jpg"), _sha(b"abc"), 100)
    assert read_verified(str(tmp_path / "real" / "sub" / "x.jpg"), _sha(b"abc"), 100) == b"abc"


def test_changed_content_is_a_conflict_and_gone_is_not_found(tmp_path):
    f = tmp_path / "x.jpg"
    f.write_bytes(b"new content")
    with pytest.raises(SourceChangedError):
        read_verified(str(f), _sha(b"old content"), 100)
    with pytest.raises(SourceUnavailableError):
        read_verified(str(tmp_path / "gone.jpg"), _sha(b"x"), 100)
    with pytest.raises(SourceUnavailableError):
        read_verified(str(f), None, 100)


def test_fifo_and_folder_are_not_regular_files(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(SourceUnavailableError):
        read_verified(str(fifo), _sha(b""), 100)  # and does not block
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(SourceUnavailableError):
        read_verified(str(tmp_path / "dir.jpg"), _sha(b""), 100)


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_tar_members_get_the_same_checks(tmp_path):
    shard = tmp_path / "shard.tar"
    _tar(shard, {"0001.jpg": b"member bytes"})
    uri = f"{shard}#0001.jpg"
    assert read_verified(uri, _sha(b"member bytes"), 100) == b"member bytes"
    with pytest.raises(SourceChangedError):
        read_verified(uri, _sha(b"other bytes"), 100)
    with pytest.raises(SourceUnavailableError):
        read_verified(f"{shard}#nope.jpg", _sha(b"member bytes"), 100)
    real = tmp_path / "elsewhere.tar"
    shard.rename(real)
    shard.symlink_to(real)  # the shard itself swapped for a symlink
    with pytest.raises(SourceUnavailableError):
        read_verified(uri, _sha(b"member bytes"), 100)


def test_aliases_map_server_links_before_the_walk(tmp_path):
    (tmp_path / "v1" / "uploads").mkdir(parents=True)
    (tmp_path / "v1" / "uploads" / "a.jpg").write_bytes(b"up")
    (tmp_path / "live").symlink_to(tmp_path / "v1")
    uri = str(tmp_path / "live" / "uploads" / "a.jpg")
    with pytest.raises(SourceUnavailableError):
        read_verified(uri, _sha(b"up"), 100)
    aliases = {tmp_path / "live" / "uploads": tmp_path / "v1" / "uploads"}
    assert read_verified(uri, _sha(b"up"), 100, aliases=aliases) == b"up"
    with pytest.raises(SourceUnavailableError):  # no climbing out of the mapped folder
        read_verified(
            str(tmp_path / "live" / "uploads" / ".." / "uploads" / "a.jpg"), _sha(b"up"), 100, aliases=aliases
        )


# -- readers -----------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path, tiny_models):
    imgs = tmp_path / "imgs"
    paths = write_images(imgs, 6)
    settings = Settings(data_dir=tmp_path / "data", model=str(tiny_models["blip-itm"]), batch_size=4)
    index_paths(settings, [imgs], "c", progress=False)
    coll = Collection.open(settings.data_dir, "c")
    recs = coll.get_records(list(range(6)))
    by_uri = {r["uri"]: rid for rid, r in recs.items()}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, settings, {Path(p).resolve(): by_uri[str(Path(p).resolve())] for p in paths}


def test_file_route_never_serves_a_symlink_target_or_changed_content(served, tmp_path):
    client, _, ids = served
    (path0, rid0), (path1, rid1), (path2, rid2) = list(ids.items())[:3]
    original = path0.read_bytes()
    r = client.get(f"/v1/collections/c/images/{rid0}/file")
    assert r.status_code == 200 and r.content == original
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    path0.unlink()
    path0.symlink_to(secret)
    r = client.get(f"/v1/collections/c/images/{rid0}/file")
    assert r.status_code == 404 and "root:x" not in r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    path0.unlink()
    path0.symlink_to(path1)  # a symlink to another indexed image: still refused
    assert client.get(f"/v1/collections/c/images/{rid0}/file").status_code == 404
    path1.write_bytes(_jpeg(1234))  # changed in place
    r = client.get(f"/v1/collections/c/images/{rid1}/file")
    assert r.status_code == 409 and "changed since indexing" in r.json()["detail"]
    assert client.get(f"/v1/collections/c/images/{rid1}/thumbnail").status_code == 409
    path2.unlink()
    assert client.get(f"/v1/collections/c/images/{rid2}/file").status_code == 404
    assert client.get(f"/v1/collections/c/images/{rid2}/thumbnail").status_code == 404
    assert client.get("/healthz").status_code == 200


def test_rerank_drops_candidates_whose_file_became_a_symlink(served, tmp_path, blip_embedder):
    _, settings, ids = served
    engine = open_engine(settings, "c", embedder=blip_embedder, rerank=True)
    (path0, rid0), (path1, rid1) = list(ids.items())[:2]
    decoy = tmp_path / "decoy.jpg"
    decoy.write_bytes(path1.read_bytes())
    path0.unlink()
    path0.symlink_to(path1)  # a valid image behind a symlink
    path1.write_bytes(_jpeg(99))  # changed content
    result = engine.search_text("a red square", 6, rerank=True, rerank_k=6)
    assert {d["id"] for d in result.dropped} == {rid0, rid1}
    assert {h.id for h in result.hits} == set(ids.values()) - {rid0, rid1}


def test_captions_skip_a_symlinked_original(served, tiny_models):
    from indexer.captions import caption_collection
    from models.captioners import load_captioner

    _, settings, ids = served
    path0, rid0 = next(iter(ids.items()))
    target = path0.with_name("moved.jpg")
    path0.rename(target)
    path0.symlink_to(target)
    coll = Collection.open(settings.data_dir, "c")
    captioner = load_captioner(str(tiny_models["blip-caption"]), device="cpu", batch_size=4)
    report = caption_collection(coll, captioner, progress=False)
    assert report["failed"] == 1 and report["captioned"] == 5
    assert [f["id"] for f in report["failures"]] == [rid0]


def test_moderation_records_a_symlinked_or_changed_original_as_failed(served, blip_embedder):
    from models import load_itm
    from moderation.batch import moderate_collection
    from moderation.checks import Moderator
    from moderation.policy import parse_policy
    from storage.catalog import open_catalog

    _, settings, ids = served
    (path0, rid0), (path1, rid1) = list(ids.items())[:2]
    path0.unlink()
    path0.symlink_to(path1)  # a valid image behind a symlink
    path1.write_bytes(_jpeg(7))  # changed content
    cats = [{"name": "red", "prompts": ["a red square"], "action": "block", "itc_threshold": 0.0, "itm_threshold": 0.5}]
    policy = parse_policy({"name": "p", "version": 1, "categories": cats})
    mod = Moderator(policy, blip_embedder, load_itm(blip_embedder, batch_size=4))
    catalog = open_catalog(settings.catalog_url())
    out = moderate_collection(settings, catalog, Collection.open(settings.data_dir, "c"), mod, progress=False)
    assert (out["checked"], out["failed"]) == (4, 2)
    errors = {int(f["id"]): f["error"] for f in out["failures"]}
    assert set(errors) == {rid0, rid1}
    assert "symbolic link" in errors[rid0] and "changed since indexing" in errors[rid1]


def test_reembed_refuses_a_symlinked_or_changed_original(served, blip2_embedder):
    from blipsearch.errors import StorageError
    from indexer.reembed import reembed

    _, settings, ids = served
    (path0, rid0), (path1, rid1) = list(ids.items())[:2]
    moved = path0.with_name("moved.jpg")
    path0.rename(moved)
    path0.symlink_to(moved)  # the indexed bytes, but reached through a symlink
    path1.write_bytes(_jpeg(5))  # changed content
    with pytest.raises(StorageError, match=r"2 record\(s\) of 'c' cannot be re-embedded"):
        reembed(settings, "c", "blip2", embedder=blip2_embedder, progress=False)
    payload = reembed(settings, "c", "blip2", embedder=blip2_embedder, progress=False, skip_missing=True)
    dropped = {d["id"]: d["error"] for d in payload["dropped_records"]}
    assert set(dropped) == {rid0, rid1} and payload["reembedded"] == 4
    assert "symbolic link" in dropped[rid0] and dropped[rid1].startswith("changed")
