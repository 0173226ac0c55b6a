"""The row-alignment contract between Arrow records and FAISS ids (storage/collection.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blipsearch.errors import ModelMismatchError
from search import index_store
from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import write_images


@pytest.mark.parametrize("fixture", ["blip_embedder", "blip2_embedder"])
def test_faiss_ids_are_record_ids(request, fixture, settings, tmp_path):
    embedder = request.getfixturevalue(fixture)
    write_images(tmp_path / "a", 20)
    index_paths(settings, [tmp_path / "a"], "c", embedder=embedder, progress=False)
    coll = Collection.open(settings.data_dir, "c")
    m = coll.manifest
    assert m.index is not None and m.index.covered_shards == [s.file for s in m.shards]
    assert m.index.model_fingerprint == embedder.fingerprint and m.index.dim == 256
    assert m.index.vectors_per_item == embedder.vectors_per_image
    index, _ = index_store.load(coll)
    v = embedder.vectors_per_image
    assert index.ntotal == m.count * v
    ids, emb = coll.all_embeddings()
    assert ids.tolist() == list(range(20))  # ids are assigned densely from 0 in commit order
    # Each record's vectors sit in FAISS under id*v + q and are exactly the stored embedding.
    for rid in (0, 7, 19):
        fids = np.arange(rid * v, rid * v + v)
        stored = np.stack([index.cpu.reconstruct(int(f)) for f in fids])
        np.testing.assert_allclose(stored, emb[rid].reshape(v, -1), atol=0)
    # The sidecar describes the index file.
    side = json.loads((coll.root / "index.json").read_text())
    assert side["file"] == m.index.file and side["spec"] == "IDMap2,Flat"


def test_stale_index_is_caught_up_from_records(settings, blip_embedder, tmp_path):
    write_images(tmp_path / "a", 10)
    index_paths(settings, [tmp_path / "a"], "c", embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "c")
    old_index = coll.manifest.index
    # Commit more records without touching the index, as a crash after a shard commit would.
    write_images(tmp_path / "b", 5, start=100)
    from indexer.options import IndexOptions
    from indexer.pipeline import IndexPipeline
    from indexer.sources import iter_files

    options = IndexOptions(batch_size=4, shard_size=4, decode_mode="thread")
    IndexPipeline(coll, blip_embedder, options).run(iter_files([tmp_path / "b"]))
    coll.reload()
    assert coll.manifest.index == old_index and coll.manifest.count == 15
    index, covered = index_store.load(coll)
    assert index.ntotal == 15 and covered == [s.file for s in coll.manifest.shards]


def test_reindex_rebuilds_identical_index(settings, blip_embedder, tmp_path):
    write_images(tmp_path / "a", 12)
    index_paths(settings, [tmp_path / "a"], "c", embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "c")
    before, _ = index_store.load(coll)
    q = blip_embedder.embed_texts(["a blue circle"])[0]
    old_file = coll.manifest.index.file
    (coll.root / old_file).unlink()  # the index is derived: losing it loses nothing
    info = index_store.refresh(coll, rebuild=True)
    assert info.file != old_file and info.ntotal == 12
    after, _ = index_store.load(coll)
    for a, b in zip(before.search(q, 12), after.search(q, 12), strict=True):
        np.testing.assert_array_equal(a, b)


def test_refuses_to_mix_models(settings, blip_embedder, blip2_embedder, tmp_path):
    write_images(tmp_path / "a", 4)
    index_paths(settings, [tmp_path / "a"], "c", embedder=blip_embedder, progress=False)
    with pytest.raises(ModelMismatchError, match="never mixes models"):
        index_paths(settings, [tmp_path / "a"], "c", embedder=blip2_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "c")
    with pytest.raises(ModelMismatchError):
        index_store.load(coll, blip2_embedder.fingerprint)
    from search.engine import SearchEngine

    with pytest.raises(ModelMismatchError):
        SearchEngine.open(coll, blip2_embedder)


def test_corrupt_index_file_is_rebuilt(settings, blip_embedder, tmp_path):
    write_images(tmp_path / "a", 6)
    index_paths(settings, [tmp_path / "a"], "c", embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "c")
    (coll.root / coll.manifest.index.file).write_bytes(b"garbage")
    index, _ = index_store.load(coll)
    assert index.ntotal == 6
