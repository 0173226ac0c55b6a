"""A FAISS index over a collection's vectors, with the FAISS-id ↔ record-id mapping.

Thread safety: ``add`` and ``search`` may run concurrently (the API adds uploads while it
answers queries). One lock covers ``add`` and ``search``, so a search sees either all or
none of an added batch.
Search parameters (``k``, ``nprobe``, ``efSearch``) are passed per call as FAISS
SearchParameters; the shared index is never mutated per request.

Exact re-rank ("refine"): a compressed index (PQ / SQ codes) orders near-duplicates
by approximate distances. With a refine depth ``refine_k`` > k, a search takes a shortlist of
``refine_k`` from the index, re-scores it exactly against the records' stored vectors
(``lookup``, else what the index reconstructs) and cuts it to k: the scores returned are then
the exact ones. Per call (``search(refine_k=...)``) or the index's tuned default
(``defaults["refine_k"]``); 0 or 1 is off; ignored for exact codes (Flat, IVF-Flat, HNSW-Flat).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from blipsearch.errors import InvalidInputError, StorageError
from search import faiss_backend as fb
from search.index_choice import is_compressed
from search.topk import topk_owners

MAX_REFINE_K = 4096
log = logging.getLogger(__name__)


def without(
    allowed: np.ndarray | None, excluded: np.ndarray | None, dead: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A search's (allowed, excluded) record ids with ``dead`` ids (tombstones an index still
    holds) never returned: taken out of ``allowed``, else added to ``excluded``."""
    dead = np.asarray(dead, np.int64)
    if not dead.size:
        return allowed, excluded
    if allowed is not None:
        return np.setdiff1d(np.asarray(allowed, np.int64), dead), None
    return None, dead if excluded is None else np.union1d(np.asarray(excluded, np.int64), dead)


class VectorIndex:
    gpu_capable = True  # on-disk indexes (search/ondisk.py) are CPU only

    def __init__(self, cpu_index: Any, dim: int, vectors_per_item: int, spec: str) -> None:
        self.cpu = cpu_index
        self.dim = dim
        self.vectors_per_item = vectors_per_item
        self.spec = spec
        self._lock = threading.RLock()
        # Tuned per-index defaults ({"nprobe": 16} / {"efSearch": 64}), used when a query names none.
        self.defaults: dict[str, int] = {}
        self.gpu: Any | None = fb.to_gpu(cpu_index) if self.gpu_capable else None
        # Which shards this index holds, and how many of each shard's tombstones it has applied
        # (maintained by search/index_store.py; -1 = not yet checked).
        self.synced: dict[str, int] = {}
        self._direct_map_ready = False
        # Record ids -> their stored (exact) vectors, from storage; used for compressed codes,
        # which reconstruct only approximately (set by search/index_store.py).
        self.lookup: Callable[[np.ndarray], np.ndarray] | None = None

    @classmethod
    def empty(cls, spec: str, dim: int, vectors_per_item: int) -> VectorIndex:
        return cls(fb.new_index(spec, dim), dim, vectors_per_item, spec)

    def after_sync(self, shards: list[Any]) -> None:
        """Called by ``index_store.sync`` with the manifest's shards (on-disk indexes recount)."""

    @property
    def ntotal(self) -> int:
        return int(self.cpu.ntotal)

    @property
    def on_gpu(self) -> bool:
        return self.gpu is not None

    def _inner(self) -> Any:
        f = fb.faiss()
        if self.cpu is None:
            return None
        return f.downcast_index(self.cpu.index) if hasattr(self.cpu, "index") else f.downcast_index(self.cpu)

    @functools.cached_property
    def kind(self) -> str:
        """``flat``, ``ivf`` or ``hnsw`` (what per-query knob applies; fixed for the index's life)."""
        f = fb.faiss()
        inner = self._inner()
        if isinstance(inner, f.IndexIVF):
            return "ivf"
        if isinstance(inner, f.IndexHNSW):
            return "hnsw"
        return "flat"

    @functools.cached_property
    def compressed(self) -> bool:
        """Whether the index holds lossy codes (PQ / SQ ...), which an exact refine improves."""
        return is_compressed(self.spec)

    def refine_depth(self, k: int, refine_k: int | None = None) -> int:
        """How many candidates a top-``k`` search takes before the exact re-rank: ``refine_k``
        (per call) or the tuned default, when the index is compressed and it exceeds k; else k."""
        value = refine_k if refine_k is not None else self.defaults.get("refine_k", 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_REFINE_K:
            raise InvalidInputError(f"refine_k must be between 0 and {MAX_REFINE_K} (0 or 1: off), got {value!r}.")
        if not self.compressed or value <= max(k, 1):
            return k
        return value

    @property
    def nlist(self) -> int:
        return int(self._inner().nlist) if self.kind == "ivf" else 0

    def make_params(self, nprobe: int | None = None, ef_search: int | None = None) -> Any | None:
        """FAISS SearchParameters for one call (never mutating the shared index); the tuned
        defaults apply where the caller gives none. Knobs that do not apply are ignored."""
        f = fb.faiss()
        kind = self.kind
        if kind == "ivf":
            value = nprobe or self.defaults.get("nprobe") or 1
            if value < 1:
                raise InvalidInputError("nprobe must be at least 1.")
            return f.SearchParametersIVF(nprobe=int(min(value, self.nlist)))
        if kind == "hnsw":
            value = ef_search or self.defaults.get("efSearch") or 16
            if value < 1:
                raise InvalidInputError("efSearch must be at least 1.")
            return f.SearchParametersHNSW(efSearch=int(value))
        return None

    def faiss_ids(self, ids: np.ndarray) -> np.ndarray:
        v = self.vectors_per_item
        ids = np.asarray(ids, dtype=np.int64)
        if v == 1:
            return ids
        return (ids[:, None] * v + np.arange(v, dtype=np.int64)[None, :]).reshape(-1)

    def train(self, vectors: np.ndarray) -> None:
        """Train a quantizer (IVF, PQ) on a sample; a no-op for flat indexes."""
        vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            if not self.cpu.is_trained:
                if len(vecs) == 0:
                    raise InvalidInputError(f"Index spec {self.spec!r} needs training data; the collection is empty.")
                inner = self._inner()
                gpu_kmeans = fb.gpu_clustering_index(self.dim) if self.kind == "ivf" else None
                if gpu_kmeans is not None:  # k-means of the coarse quantizer on the GPU
                    inner.clustering_index = gpu_kmeans
                try:
                    self.cpu.train(vecs)
                finally:
                    if gpu_kmeans is not None:
                        inner.clustering_index = None

    def add(self, ids: np.ndarray, embeddings: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1, self.dim)
        fids = self.faiss_ids(ids)
        with self._lock:
            if not self.cpu.is_trained:
                self.cpu.train(vecs)  # untrained at first add: train on what is being added
            self.cpu.add_with_ids(vecs, fids)
            if self.gpu is not None:
                self.gpu = fb.to_gpu(self.cpu)

    def remove(self, ids: np.ndarray) -> int:
        """Remove records' vectors; ids not in the index are ignored. Returns vectors removed.

        Raises StorageError for index types that cannot remove (HNSW): rebuild those instead.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return 0
        selector = fb.faiss().IDSelectorBatch(np.ascontiguousarray(self.faiss_ids(ids)))
        with self._lock:
            self._drop_direct_map()  # FAISS removes through IDMap2 only without one; rebuilt on next use
            try:
                removed = int(self.cpu.remove_ids(selector))
            except RuntimeError as exc:
                raise StorageError(f"Index {self.spec!r} cannot remove vectors: {exc}") from exc
            if removed and self.gpu is not None:
                self.gpu = fb.to_gpu(self.cpu)
            return removed

    def _search_vectors(self, queries: np.ndarray, kk: int, params: Any | None) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            on_gpu = self.gpu is not None and kk <= fb.GPU_MAX_K and getattr(params, "sel", None) is None
            index: Any = self.gpu if on_gpu else self.cpu  # FAISS GPU indexes take no ID selectors
            if params is None:
                return index.search(queries, kk)
            try:
                return index.search(queries, kk, params=params)
            except RuntimeError:
                if not on_gpu:
                    raise
                return self.cpu.search(queries, kk, params=params)  # a GPU index refusing these params

    def _ensure_direct_map(self) -> None:
        """IVF indexes reconstruct stored vectors (re-rank depth scores, "more like this") through
        a direct map, which FAISS does not build by default: build it on first use, as a hashtable
        (adds keep it up to date; ``remove`` drops it first, and the next use rebuilds it)."""
        if self._direct_map_ready:
            return
        ivf = self._ivf()
        if ivf is not None and ivf.direct_map.type == fb.faiss().DirectMap.NoMap:
            ivf.set_direct_map_type(fb.faiss().DirectMap.Hashtable)
        self._direct_map_ready = True

    def _drop_direct_map(self) -> None:
        if not self._direct_map_ready:
            return
        ivf = self._ivf()
        if ivf is not None and ivf.direct_map.type != fb.faiss().DirectMap.NoMap:
            ivf.set_direct_map_type(fb.faiss().DirectMap.NoMap)
        self._direct_map_ready = False

    def _ivf(self) -> Any | None:
        try:
            return fb.faiss().extract_index_ivf(self._inner())
        except (RuntimeError, TypeError):  # not an IVF index: Flat and HNSW reconstruct by themselves
            return None

    def _stored(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of records ``ids`` as [n * vectors_per_item, dim] float32. Here
        reconstructed from the index (read from the records for compressed codes, which
        reconstruct only approximately); on-disk and sharded indexes read them from the records."""
        if self.compressed and self.lookup is not None:
            return np.asarray(self.lookup(ids), np.float32).reshape(len(ids) * self.vectors_per_item, self.dim)
        with self._lock:
            self._ensure_direct_map()
            return np.asarray(self.cpu.reconstruct_batch(self.faiss_ids(ids)), dtype=np.float32)

    def vectors_of(self, rid: int) -> np.ndarray:
        """The stored vectors of record ``rid``: [vectors_per_item, dim]."""
        return self._stored(np.array([rid], dtype=np.int64))

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of records ``ids``: [n, vectors_per_item, dim]."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return np.zeros((0, self.vectors_per_item, self.dim), np.float32)
        return self._stored(ids).reshape(len(ids), self.vectors_per_item, self.dim)

    def item_scores(self, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact max-sim of ``query`` ([dim] or [nq, dim]) against the stored vectors of ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return np.zeros(0, np.float32)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1, self.dim)
        sims = self.vectors(ids) @ q.T  # [n, v, nq]
        return sims.reshape(len(ids), -1).max(axis=1).astype(np.float32)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        params: Any | None = None,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        refine_k: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` record ids by max over (query vector, item vector) inner products.

        ``queries`` is [dim] or [nq, dim] (BLIP-2 image queries have nq = 32). ``allowed``
        restricts the search to those record ids, ``excluded`` removes record ids, both inside
        FAISS (an IDSelectorBatch, or its IDSelectorNot); give one or the other. ``params``:
        from ``make_params`` (per-call nprobe / efSearch); default: the index's tuned defaults.
        ``refine_k``: exact re-rank depth for compressed indexes (module docstring).
        """
        depth = self.refine_depth(k, refine_k)
        ids, scores = self._search_items(queries, depth, params, allowed, excluded)
        if depth == k or ids.size == 0:
            return ids, scores
        try:
            exact = self.item_scores(queries, ids)
        except KeyError as exc:  # a record deleted since this index last synced: the codes' order
            log.warning("exact re-rank skipped: record %s is gone; answering from the index's scores", exc)
            return ids[:k], scores[:k]
        order = np.argsort(-exact, kind="stable")[:k]
        return ids[order], exact[order]

    def _search_items(
        self,
        queries: np.ndarray,
        k: int,
        params: Any | None,
        allowed: np.ndarray | None,
        excluded: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        ntotal = self.ntotal
        f = fb.faiss()
        if params is None:
            params = self.make_params()
        selector = None
        if allowed is not None:
            fids = np.ascontiguousarray(self.faiss_ids(allowed))
            selector = f.IDSelectorBatch(fids)
            ntotal = min(ntotal, len(fids))
        elif excluded is not None and len(excluded):
            batch = f.IDSelectorBatch(np.ascontiguousarray(self.faiss_ids(excluded)))
            selector = f.IDSelectorNot(batch)
            selector.keep = batch  # the Not selector does not own its argument
        if selector is not None:
            params = params if params is not None else f.SearchParameters()
            params.sel = selector
        return topk_owners(lambda x, kk: self._search_vectors(x, kk, params), q, k, self.vectors_per_item, ntotal)
