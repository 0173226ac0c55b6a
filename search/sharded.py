"""One collection's vectors split over N index shards, searched as one index.

Each shard holds a part of the records (whole Parquet shards, dealt round-robin). A query fans
out to every shard and the shards' top-k lists are merged by score: for exact (Flat) shards the
merge of exact per-shard top-k is the exact global top-k, so a sharded collection answers with
the same ids and scores as one index over everything. ``ShardedIndex`` is a ``SearchIndex``
(search/index_base.py), so ``SearchEngine`` applies filters, ``min_score``, moderation exclusion
and re-ranking on top unchanged; exact vectors (re-rank depth, "more like this") come from the
records. It is read only: a commit re-makes it from the records (the engine's index loader).

A shard that does not answer within ``timeout_s`` either fails the query with
``ShardUnavailableError`` (HTTP 503) or, in ``partial`` mode, is left out and the missing shard
numbers come back with the answer (``Found.missing_shards``, then ``SearchResult.missing_shards``):
never a silent loss.

This is the merge layer a multi-machine deployment plugs its shard clients into: ``LocalShard``
is the in-process client; ``api/ray_serve.py`` plugs in Ray Serve shard deployments, each running a
``search/shard_server.py`` ``ShardServer``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from typing import Any, Protocol

import numpy as np

from blipsearch.errors import OverloadedError
from blipsearch.limits import SHARD_TIMEOUT_S
from search.index_base import Found, Lookup, RecordVectors
from search.specs import FLAT_SPEC
from search.vector_index import VectorIndex
from storage.collection import Collection
from storage.manifest import ShardInfo

log = logging.getLogger(__name__)


class ShardUnavailableError(OverloadedError):
    """A shard of the index did not answer in time."""

    code = "shard_unavailable"


class ShardClient(Protocol):
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None, excluded: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]: ...


class LocalShard:
    """An in-process shard: an exact index over some of the collection's Parquet shards."""

    def __init__(self, index: VectorIndex) -> None:
        self.index = index

    @classmethod
    def build(cls, coll: Collection, shards: Sequence[ShardInfo], spec: str = FLAT_SPEC) -> LocalShard:
        m = coll.manifest
        index = VectorIndex.empty(spec, m.dim, m.vectors_per_item)
        for ids, emb in coll.iter_embeddings(shards):
            index.add(ids, emb)
        return cls(index)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None, excluded: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k, allowed=allowed, excluded=excluded)


def split(shards: Sequence[ShardInfo], n: int) -> list[list[ShardInfo]]:
    """Deal Parquet shards round-robin over ``n`` index shards."""
    return [list(shards[i::n]) for i in range(n)]


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` (ids, scores) of several top-k lists (score descending, then id)."""
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    ids = np.concatenate([np.asarray(p[0], np.int64) for p in parts])
    scores = np.concatenate([np.asarray(p[1], np.float32) for p in parts])
    keep = ids >= 0
    ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]


class ShardedIndex(RecordVectors):
    """The sharded index kind: fans a query out to its shard clients, merges their exact top-k
    (``merge_topk``), and reads stored vectors from the records (``lookup``). Read only."""

    def __init__(
        self,
        shards: Sequence[ShardClient],
        dim: int,
        vectors_per_item: int,
        *,
        ntotal: int,
        lookup: Lookup,
        timeout_s: float = SHARD_TIMEOUT_S,
        partial: bool = False,
        pool: Executor | None = None,
    ) -> None:
        super().__init__(dim, vectors_per_item, f"Sharded{len(shards)},Flat", lookup)
        self.shards = list(shards)
        self._ntotal = ntotal
        self.timeout_s = timeout_s
        self.partial = partial
        # Fan-out threads; a server passes one pool shared by all its sharded indexes (they are
        # re-made at every commit) and sized for its concurrent queries.
        self._pool = pool or ThreadPoolExecutor(max_workers=max(1, len(self.shards)), thread_name_prefix="shard")

    @property
    def ntotal(self) -> int:
        return self._ntotal

    @property
    def kind(self) -> str:
        return "flat"

    def make_params(self, nprobe: int | None = None, ef_search: int | None = None) -> Any | None:
        """Shards are exact (Flat): no per-query knob applies."""
        return None

    def search(
        self,
        queries: np.ndarray,
        k: int,
        params: Any | None = None,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        refine_k: int | None = None,  # shards are Flat: exact already (refine is for PQ/SQ codes)
    ) -> Found:
        futures = [self._pool.submit(s.search, queries, k, allowed, excluded) for s in self.shards]
        done, _ = wait(futures, timeout=self.timeout_s)
        late = [i for i, f in enumerate(futures) if f not in done]
        failed = {i: f.exception() for i, f in enumerate(futures) if f in done and f.exception() is not None}
        for i, exc in failed.items():
            log.warning("index shard %d failed: %s: %s", i, type(exc).__name__, exc)
        missing = tuple(sorted([*late, *failed]))
        if missing and not self.partial:
            why = []
            if late:
                why.append(f"{late} did not answer within {self.timeout_s:g} s")
            if failed:
                why.append(f"{sorted(failed)} failed")
            raise ShardUnavailableError(f"Index shard(s) {list(missing)} unavailable ({'; '.join(why)}); try again.")
        ids, scores = merge_topk([f.result() for i, f in enumerate(futures) if i not in missing], k)
        return Found(ids, scores, missing)
