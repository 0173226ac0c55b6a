"""Exact vectors by id come from a memory-mapped per-shard cache (storage/vector_cache.py) and
equal the Parquet records; the cache is derived, checked, rebuilt and swept."""

from __future__ import annotations

import os

import numpy as np
import pytest

from storage import vector_cache
from storage.collection import Collection
from storage.compaction import compact
from tests.helpers import synthetic_rows
from tests.test_index_choice import DIM, _clustered, _collection


def _multi(tmp_path, n: int, v: int) -> Collection:
    model = {"model_id": "synthetic", "fingerprint": "e" * 16, "family": "blip2", "dim": DIM, "vectors_per_image": v}
    coll = Collection.create(tmp_path, "multi", model=model)
    vecs = _clustered(n * v, seed=3).reshape(n, v, DIM)
    for start in range(0, n, 100):
        stop = min(n, start + 100)
        coll.append_aligned(synthetic_rows(start, stop), vecs[start:stop])
    return coll


@pytest.mark.parametrize("v", [1, 4])
def test_vectors_by_id_equal_the_records(tmp_path, v):
    coll = _collection(tmp_path, 3000) if v == 1 else _multi(tmp_path, 350, v)
    ids, emb = coll.all_embeddings()
    pick = np.random.default_rng(0).choice(ids, 40, replace=False)
    want = emb[np.searchsorted(ids, pick)]
    np.testing.assert_array_equal(coll.embeddings_of(pick), want)  # bit-equal: the same float32s
    np.testing.assert_array_equal(coll.embeddings_of(pick[::-1]), want[::-1])  # any order
    files = sorted(p.name for p in (coll.root / "vectors").iterdir())
    touched = {s.file.removesuffix(".parquet") for s in coll.manifest.shards}
    assert files and {f.split(".")[0] for f in files} <= touched
    with pytest.raises(KeyError):
        coll.embeddings_of([10**9])


def test_deleted_ids_are_refused_and_bad_cache_files_rebuilt(tmp_path):
    coll = _collection(tmp_path, 2000)
    want = coll.embeddings_of([5, 1500])
    coll.delete([5])
    with pytest.raises(KeyError):
        coll.embeddings_of([5])
    shard = coll.manifest.shards[0]
    path = coll.root / "vectors" / shard.file.replace(".parquet", ".npy")
    path.write_bytes(path.read_bytes()[:1000])  # truncated (a disk error)
    vector_cache._mapped.cache_clear()
    np.testing.assert_array_equal(coll.embeddings_of([7]), _collection_vec(coll, 7))
    assert path.stat().st_size > 1000
    # A symlink planted at the cache path is never followed (nor written through).
    victim = tmp_path / "victim.npy"
    np.save(victim, np.zeros((shard.rows, DIM), np.float32))
    path.unlink()
    os.symlink(victim, path)
    vector_cache._mapped.cache_clear()
    np.testing.assert_array_equal(coll.embeddings_of([1500]), want[1:])
    np.testing.assert_array_equal(coll.embeddings_of([7]), _collection_vec(coll, 7))
    assert not np.load(victim).any()
    assert not path.is_symlink()  # replaced by a rebuilt cache file


def _collection_vec(coll: Collection, rid: int) -> np.ndarray:
    ids, emb = coll.all_embeddings()
    return emb[np.searchsorted(ids, [rid])]


def test_caches_of_compacted_shards_are_swept(tmp_path):
    coll = _collection(tmp_path, 3000)
    coll.embeddings_of([1, 1001, 2001])  # caches for all three shards
    (coll.root / "flatcache").mkdir()
    (coll.root / "flatcache" / "shard-00000000.faiss").write_bytes(b"x")
    old = {p.name for p in (coll.root / "vectors").iterdir()}
    assert len(old) == 6
    coll.delete(range(0, 3000, 2))
    compact(coll)
    coll.reload()
    coll.sweep_orphans()
    left = {p.name for p in (coll.root / "vectors").iterdir()}
    assert not left & old and not (coll.root / "flatcache" / "shard-00000000.faiss").exists()
    live = coll.all_embeddings()
    np.testing.assert_array_equal(coll.embeddings_of(live[0][:5]), live[1][:5])


def test_a_symlinked_cache_folder_is_never_read_or_written_through(tmp_path):
    """A symlink planted where a cache folder goes (vectors/, flatcache/) redirects nothing: the
    vectors come from the records and no file appears at the symlink's target."""
    from search.shard_server import ShardServer
    from search.sharded import LocalShard, split

    coll = _collection(tmp_path, 2000)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("vectors", "flatcache"):
        os.symlink(elsewhere, coll.root / name)
    np.testing.assert_array_equal(
        coll.embeddings_of([3, 1999]), np.concatenate([_collection_vec(coll, 3), _collection_vec(coll, 1999)])
    )
    part = split(coll.manifest.shards, 2)[0]
    q = _clustered(1, seed=6)[0]
    got = ShardServer(tmp_path, 0, 2).search(coll.name, coll.root.name, part, q, 5)
    np.testing.assert_array_equal(got[0], LocalShard.build(coll, part).search(q, 5, None, None)[0])
    assert list(elsewhere.iterdir()) == []
