"""A collection split over index shards answers like one index over everything
(search/sharded.py); a shard that does not answer fails the query or is reported missing."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from blipsearch.errors import CollectionReplacedError
from search import index_store
from search.sharded import LocalShard, ShardedIndex, ShardUnavailableError, merge_topk, split
from storage.compaction import compact
from tests.helpers import synthetic_rows
from tests.test_index_choice import _clustered, _collection


def _sharded(coll, n: int, **kw) -> ShardedIndex:
    m = coll.manifest
    shards = [LocalShard.build(coll, part) for part in split(m.shards, n)]
    return ShardedIndex(shards, m.dim, m.vectors_per_item, ntotal=m.count, lookup=coll.embeddings_of, **kw)


def test_two_shards_equal_one_index(tmp_path):
    coll = _collection(tmp_path, 4000)  # 4 Parquet shards: 2 per index shard
    single = index_store.build(coll, "Flat")
    sharded = _sharded(coll, 2)
    assert [s.index.ntotal for s in sharded.shards] == [2000, 2000]
    for q in _clustered(15, seed=4):
        for kw in ({}, {"allowed": np.arange(1, 4000, 3)}, {"excluded": np.arange(0, 4000, 2)}):
            a_ids, a_scores = single.search(q, 10, **kw)
            found = sharded.search(q, 10, **kw)
            b_ids, b_scores = found
            np.testing.assert_array_equal(b_ids, a_ids)
            np.testing.assert_allclose(b_scores, a_scores, atol=1e-6)
            assert found.missing_shards == ()
    ids = np.array([5, 1999, 3001])
    np.testing.assert_allclose(sharded.item_scores(q, ids), single.item_scores(q, ids), atol=1e-6)
    np.testing.assert_allclose(sharded.vectors_of(42), single.vectors_of(42), atol=1e-6)


def test_merge_topk_orders_by_score_then_id():
    ids, scores = merge_topk([(np.array([3, 1, -1]), np.array([0.9, 0.5, 0])), (np.array([2, 7]), [0.9, 0.7])], 3)
    assert ids.tolist() == [2, 3, 7] and np.allclose(scores, [0.9, 0.9, 0.7])


class _Stuck:
    def __init__(self) -> None:
        self.release = threading.Event()

    def search(self, *args):
        self.release.wait(5)
        raise RuntimeError("shard lost")


def test_a_shard_that_does_not_answer_is_never_lost_silently(tmp_path):
    coll = _collection(tmp_path, 2000)
    good = LocalShard.build(coll, coll.manifest.shards[:1])
    stuck = _Stuck()
    m = coll.manifest
    strict = ShardedIndex([good, stuck], m.dim, 1, ntotal=m.count, lookup=coll.embeddings_of, timeout_s=0.2)
    q = _clustered(1, seed=2)[0]
    with pytest.raises(ShardUnavailableError, match=r"\[1\]") as err:
        strict.search(q, 5)
    assert err.value.http_status == 503
    partial = ShardedIndex(
        [good, stuck], m.dim, 1, ntotal=m.count, lookup=coll.embeddings_of, timeout_s=0.2, partial=True
    )
    found = partial.search(q, 5)
    ids, _ = found
    assert found.missing_shards == (1,)
    np.testing.assert_array_equal(ids, good.search(q, 5, None, None)[0])
    stuck.release.set()


def test_shard_server_follows_adds_deletes_and_compaction(tmp_path):
    """A shard serves exactly the router's view: new Parquet shards are added, tombstones
    removed, merged shards rebuilt; its answers equal a Flat index over its part."""
    from search.shard_server import ShardServer

    coll = _collection(tmp_path, 3000)
    server = ShardServer(tmp_path, 1, 2)
    q = _clustered(5, seed=9)

    def check(c) -> None:
        part = split(c.manifest.shards, 2)[1]
        ref = LocalShard.build(c, part)
        for qq in q:
            got = server.search(c.name, c.root.name, [s.model_dump() for s in part], qq, 7)
            want = ref.search(qq, 7, None, None)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_allclose(got[1], want[1], atol=1e-6)

    check(coll)
    held = server.stats()["collections"][coll.name]
    assert held == {"files": 1, "stored_vectors": 1000}  # Parquet shard 1 of 0, 1, 2
    cache = coll.root / "flatcache"
    written = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    coll.delete(np.arange(1000, 1400))  # tombstones in that Parquet shard: applied per query
    check(coll)
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == written  # nothing rewritten
    vecs = _clustered(2000, seed=3)
    for start in (3000, 4000):  # two more Parquet shards: the 4th is this shard's
        coll.append_aligned(synthetic_rows(start, start + 1000), vecs[start - 3000 : start - 2000])
    check(coll)
    assert server.stats()["collections"][coll.name] == {"files": 2, "stored_vectors": 2000}
    # A new process (a replacement replica) maps the written files instead of rebuilding them.
    again = ShardServer(tmp_path, 1, 2)
    part = split(coll.manifest.shards, 2)[1]
    got = again.search(coll.name, coll.root.name, [s.model_dump() for s in part], q[0], 7)
    np.testing.assert_array_equal(got[0], server.search(coll.name, coll.root.name, part, q[0], 7)[0])
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}.items() >= written.items()
    before = {s.file for s in coll.manifest.shards}
    compact(coll)  # tombstones dropped: new Parquet files, rebuilt from the records
    coll.reload()
    assert {s.file for s in coll.manifest.shards} != before
    check(coll)
    with pytest.raises(CollectionReplacedError):
        server.search(coll.name, "another-version", [], q[0], 3)


def test_shard_indexes_are_memory_mapped_and_a_bad_cache_file_is_rebuilt(tmp_path):
    from pathlib import Path

    from search.shard_server import ShardServer

    coll = _collection(tmp_path, 2000)
    part = split(coll.manifest.shards, 2)[0]
    q = _clustered(1, seed=5)[0]
    want = LocalShard.build(coll, part).search(q, 5, None, None)
    server = ShardServer(tmp_path, 0, 2)
    first = server.search(coll.name, coll.root.name, part, q, 5)
    np.testing.assert_array_equal(first[0], want[0])
    cached = coll.root / "flatcache" / (Path(part[0].file).stem + ".faiss")
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: the vectors are a file mapping, not a private heap copy
        assert str(cached.resolve()) in maps.read_text()
    del server
    cached.unlink()
    cached.write_bytes(b"not a faiss index")  # e.g. a disk error
    again = ShardServer(tmp_path, 0, 2).search(coll.name, coll.root.name, part, q, 5)
    np.testing.assert_array_equal(again[0], want[0])
    np.testing.assert_allclose(again[1], want[1], atol=1e-6)
    assert cached.stat().st_size > 1000  # rewritten
