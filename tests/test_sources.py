"""Input sources (folders, globs, file lists, manifests, tar shards), process-pool decoding,
and updates on content change."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from blipsearch.errors import ImageDecodeError, InvalidInputError
from indexer.decode_pool import DecodeConfig, DecodeStage
from indexer.sources import open_sources
from media.safe_read import read_verified
from search.engine import QueryOptions
from search.filters import Filters
from service.engines import open_engine
from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import make_image, write_images


def _by_sha(settings, name: str) -> dict[str, dict]:
    coll = Collection.open(settings.data_dir, name)
    rows = coll.read_table().to_pylist()
    return {r["sha256"]: r for r in rows}


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    make_image(i).save(buf, "JPEG")
    return buf.getvalue()


def _write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_every_source_kind_gives_the_same_embeddings_and_keeps_metadata(settings, blip_embedder, tmp_path):
    images = write_images(tmp_path / "imgs", 6)
    folder = index_paths(settings, [tmp_path / "imgs"], "folder", embedder=blip_embedder, progress=False)
    assert folder.added == 6

    # A file list: relative paths, a comment, a blank line, and one missing file (a recorded failure).
    (tmp_path / "list.txt").write_text(
        "# my images\n" + "\n".join(f"imgs/{p.name}" for p in images[:3]) + "\n\nimgs/missing.jpg\n"
    )
    listed = index_paths(settings, [tmp_path / "list.txt"], "listed", embedder=blip_embedder, progress=False)
    assert (listed.added, listed.failed) == (3, 1)
    assert listed.failures[0]["reason"] == "unreadable"

    # A CSV manifest with metadata columns ("007" stays a string), and a Parquet one.
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_path", "label", "sku"])
        for i, p in enumerate(images):
            w.writerow([f"imgs/{p.name}", "cat" if i % 2 else "dog", f"{i:03d}"])
    csv_run = index_paths(settings, [tmp_path / "m.csv"], "csv", embedder=blip_embedder, progress=False)
    assert csv_run.added == 6
    pq.write_table(
        pa.table({"path": [str(p) for p in images], "score": [float(i) / 2 for i in range(6)]}),
        tmp_path / "m.parquet",
    )
    index_paths(settings, [tmp_path / "m.parquet"], "parquet", embedder=blip_embedder, progress=False)

    # A WebDataset shard: image + json + txt per sample, a sample with no image (ignored),
    # and a corrupt image member (a recorded failure).
    samples = [
        (f"s{i:04d}", {"jpg": p.read_bytes(), "json": json.dumps({"i": i}).encode(), "txt": f"caption {i}".encode()})
        for i, p in enumerate(images)
    ]
    samples.insert(2, ("no_image", {"json": b"{}"}))
    samples.append(("broken", {"jpg": images[0].read_bytes()[:200]}))
    _write_tar(tmp_path / "shard-0000.tar", samples)
    tar_run = index_paths(settings, [str(tmp_path / "shard-*.tar")], "tar", embedder=blip_embedder, progress=False)
    assert (tar_run.added, tar_run.failed) == (6, 1)
    assert tar_run.failures[0]["path"].endswith("shard-0000.tar#broken.jpg")

    ref = _by_sha(settings, "folder")
    for name in ("listed", "csv", "parquet", "tar"):
        got = _by_sha(settings, name)
        assert set(got) <= set(ref) and got
        for sha, row in got.items():  # same bytes, same decode, same model: the same vector
            # (up to float rounding: batches of another size take other BLAS paths)
            np.testing.assert_allclose(np.asarray(row["embedding"]), np.asarray(ref[sha]["embedding"]), atol=1e-6)
    csv_meta = {json.loads(r["metadata"])["sku"]: json.loads(r["metadata"]) for r in _by_sha(settings, "csv").values()}
    assert csv_meta["000"] == {"label": "dog", "sku": "000"} and csv_meta["001"]["label"] == "cat"
    assert {json.loads(r["metadata"])["score"] for r in _by_sha(settings, "parquet").values()} == {
        i / 2 for i in range(6)
    }
    tar_rows = _by_sha(settings, "tar")
    for sha, row in tar_rows.items():
        meta = json.loads(row["metadata"])
        assert meta["text"] == f"caption {meta['i']}"
        raw = read_verified(row["uri"], sha, 1 << 20)  # a tar member reads back by its uri
        assert hashlib.sha256(raw).hexdigest() == sha
    assert all(r["metadata"] is None for r in ref.values())  # plain files carry no metadata

    # Metadata is filterable and comes back with hits.
    engine = open_engine(settings, "csv", embedder=blip_embedder)
    res = engine.search_text("a photo", k=10, options=QueryOptions(filters=Filters(fields={"label": "cat"})))
    assert len(res.hits) == 3 and {h.to_dict()["metadata"]["label"] for h in res.hits} == {"cat"}


def test_manifest_errors_are_clear(tmp_path):
    (tmp_path / "m.csv").write_text("name,label\na.jpg,x\n")
    with pytest.raises(InvalidInputError, match=r"no path column.*--path-column"):
        open_sources([tmp_path / "m.csv"])
    assert open_sources([tmp_path / "m.csv"], path_column="name").count() == 1
    with pytest.raises(InvalidInputError, match="no column"):
        open_sources([tmp_path / "m.csv"], path_column="name", metadata_columns=["nope"])
    with pytest.raises(InvalidInputError, match="matches no file"):
        open_sources([str(tmp_path / "*.tar")])
    with pytest.raises(InvalidInputError, match="does not exist"):
        open_sources([tmp_path / "absent"])


def test_truncated_tar_shard_is_a_recorded_failure_not_a_crash(settings, blip_embedder, tmp_path):
    images = write_images(tmp_path / "imgs", 4)
    _write_tar(tmp_path / "s.tar", [(f"k{i}", {"jpg": p.read_bytes()}) for i, p in enumerate(images)])
    data = (tmp_path / "s.tar").read_bytes()
    with tarfile.open(tmp_path / "s.tar") as tar:
        third = tar.getmembers()[2]
    (tmp_path / "cut.tar").write_bytes(data[: third.offset_data + third.size // 2])  # cut inside member 3
    report = index_paths(settings, [tmp_path / "cut.tar"], "cut", embedder=blip_embedder, progress=False)
    assert report.added == 2 and report.failed == 1
    assert report.failures[0]["reason"] == "source_error" and "truncated" in report.failures[0]["error"]


def test_process_pool_decode_equals_thread_decode(settings, blip_embedder, tmp_path):
    write_images(tmp_path / "imgs", 10)
    make_image(99, (900, 700)).save(tmp_path / "imgs" / "big.jpg", "JPEG")  # takes the JPEG draft path
    drafted = settings.model_copy(update={"jpeg_draft": True, "precision": "fast"})  # drafts are fast-mode only
    for mode in ("thread", "process"):
        s = drafted.model_copy(update={"decode_mode": mode})
        report = index_paths(s, [tmp_path / "imgs"], mode, embedder=blip_embedder, progress=False)
        assert report.added == 11
        queue = report.timings["queues"]["decoded_ahead_of_model"]  # shown by `jobs show`
        assert 0 <= queue["mean"] <= queue["max"] <= queue["capacity"]
    threads, procs = _by_sha(settings, "thread"), _by_sha(settings, "process")
    assert set(threads) == set(procs)
    for sha in threads:
        # The same pixels: equal embeddings, up to the kernels' rounding when decode order puts an
        # image in a batch of another size (different pixels would move them by far more).
        np.testing.assert_allclose(
            np.asarray(threads[sha]["embedding"]), np.asarray(procs[sha]["embedding"]), atol=1e-6, rtol=0
        )
        assert threads[sha]["width"] == procs[sha]["width"]


class CrashOnTinyImages:
    """A preprocess function that kills its worker process on 13×13 images (a decoder crash)."""

    def __call__(self, images):
        if images[0].size == (13, 13):
            os._exit(3)
        return np.zeros((len(images), 3, 4, 4), np.float32)


def test_a_crashed_decode_process_is_replaced_and_the_item_recorded():
    stage = DecodeStage(DecodeConfig(CrashOnTinyImages(), None, 10**8, None), mode="process", processes=1)
    try:
        good = io.BytesIO()
        Image.new("RGB", (20, 20)).save(good, "PNG")
        bomb = io.BytesIO()
        Image.new("RGB", (13, 13)).save(bomb, "PNG")
        assert stage(good.getvalue()).pixels.shape == (3, 4, 4)
        with pytest.raises(ImageDecodeError) as err:
            stage(bomb.getvalue())
        assert err.value.reason == "decoder_crashed"
        assert stage(good.getvalue()).meta["width"] == 20  # a fresh pool serves the next item
        with pytest.raises(ImageDecodeError) as err:
            stage(b"not an image")
        assert err.value.reason == "not_an_image"  # decode errors cross the process boundary intact
    finally:
        stage.close()


def test_changed_content_at_a_known_uri_is_reembedded_and_the_old_record_tombstoned(settings, blip_embedder, tmp_path):
    paths = write_images(tmp_path / "in", 5)
    first = index_paths(settings, [tmp_path / "in"], "u", embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "u")
    old_ids = {r["uri"]: r["id"] for r in coll.read_table(["id", "uri"]).to_pylist()}
    assert first.added == 5

    make_image(500).save(paths[1], "JPEG")  # new content at a known uri
    paths[3].write_bytes(paths[0].read_bytes())  # a uri now holding content indexed elsewhere
    second = index_paths(settings, [tmp_path / "in"], "u", embedder=blip_embedder, progress=False)
    assert (second.added, second.updated, second.removed_stale) == (1, 1, 1)

    coll.reload()
    rows = coll.read_table(["id", "uri", "sha256"]).to_pylist()
    assert len(rows) == 4 == coll.manifest.count
    by_uri = {r["uri"]: r for r in rows}
    uri1, uri3 = str(paths[1].resolve()), str(paths[3].resolve())
    assert by_uri[uri1]["sha256"] == hashlib.sha256(paths[1].read_bytes()).hexdigest()
    assert by_uri[uri1]["id"] != old_ids[uri1] and coll.locate(old_ids[uri1]) is None
    assert uri3 not in by_uri and coll.locate(old_ids[uri3]) is None
    # The index agrees: the replaced and stale records are never returned.
    engine = open_engine(settings, "u", embedder=blip_embedder)
    hits = {h.id for h in engine.search_text("anything", k=10).hits}
    assert hits == {r["id"] for r in rows}
    # A third run is a no-op.
    third = index_paths(settings, [tmp_path / "in"], "u", embedder=blip_embedder, progress=False)
    assert (third.added, third.updated, third.removed_stale) == (0, 0, 0)


def test_tar_records_over_http_metadata_file_and_search_knobs(settings, blip_embedder, tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app

    images = write_images(tmp_path / "imgs", 3)
    _write_tar(
        tmp_path / "s.tar",
        [(f"k{i}", {"jpg": p.read_bytes(), "json": json.dumps({"n": i}).encode()}) for i, p in enumerate(images)],
    )
    index_paths(settings, [tmp_path / "s.tar"], "t", embedder=blip_embedder, progress=False)
    app = create_app(settings)
    app.state.blip._embedders[blip_embedder.model_id] = blip_embedder
    with TestClient(app) as client:
        rec = client.get("/v1/collections/t/images/1").json()
        assert rec["metadata"] == {"n": 1} and rec["uri"].endswith("s.tar#k1.jpg")
        original = client.get("/v1/collections/t/images/1/file")
        assert original.status_code == 200 and original.content == images[1].read_bytes()
        assert original.headers["content-type"] == "image/jpeg"
        body = {"query": "a photo", "collection": "t", "k": 3}
        hits = client.post("/v1/search/text", json={**body, "nprobe": 4}).json()["results"]
        assert {h["metadata"]["n"] for h in hits} == {0, 1, 2}
        assert client.post("/v1/search/text", json={**body, "nprobe": 0}).status_code == 422
        (tmp_path / "s.tar").unlink()  # the shard is gone: a clear 404, not a crash
        assert client.get("/v1/collections/t/images/1/file").status_code == 404
