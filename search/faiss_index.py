"""What the two FAISS-backed index kinds share (in-memory ``VectorIndex``, on-disk ``OnDiskIndex``):
the index type's per-query knobs, ID selectors, and the search with its exact refine.

Search parameters (``k``, ``nprobe``, ``efSearch``) are passed per call as FAISS
SearchParameters; the shared index is never mutated per request.

Exact re-rank ("refine"): a compressed index (PQ / SQ codes) orders near-duplicates by
approximate distances. With a refine depth ``refine_k`` > k, a search takes a shortlist of
``refine_k`` from the index, re-scores it exactly against the records' stored vectors
(``lookup``, else what the index reconstructs) and cuts it to k: the scores returned are then
the exact ones. Per call (``search(refine_k=...)``) or the index's tuned default
(``defaults["refine_k"]``); 0 or 1 is off; ignored for exact codes (Flat, IVF-Flat, HNSW-Flat).
"""

from __future__ import annotations

import functools
import logging
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from blipsearch.errors import InvalidInputError
from search import faiss_backend as fb
from search.index_base import Found, Lookup, RecordVectors
from search.specs import faiss_ids
from search.topk import topk_owners

log = logging.getLogger(__name__)


class FaissIndex(RecordVectors, ABC):
    """A FAISS index ``cpu`` holding record ids (``search/specs.py``: one FAISS id per vector)."""

    def __init__(self, cpu_index: Any, dim: int, vectors_per_item: int, spec: str, lookup: Lookup | None = None):
        super().__init__(dim, vectors_per_item, spec, lookup)
        self.cpu = cpu_index
        self._lock = threading.RLock()
        # Which shards this index holds, and how many of each shard's tombstones it has applied
        # (maintained by search/index_store.py; -1 = not yet checked).
        self.synced: dict[str, int] = {}

    def after_sync(self, shards: list[Any]) -> None:
        """Called by ``index_store.sync`` with the manifest's shards (on-disk indexes recount)."""

    @property
    def ntotal(self) -> int:
        return int(self.cpu.ntotal)

    def faiss_ids(self, ids: np.ndarray) -> np.ndarray:
        return faiss_ids(ids, self.vectors_per_item)

    def _inner(self) -> Any:
        f = fb.faiss()
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

    @abstractmethod
    def add(self, ids: np.ndarray, embeddings: np.ndarray) -> None:
        """Add records' vectors ([n, dim] or [n, vectors_per_item, dim])."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> int:
        """Remove records; ids not held are ignored. Returns how many vectors (or tombstones) it took."""

    @abstractmethod
    def save(self, root: Path, name: str, seq: int, covered: list[str]) -> tuple[str | None, list[str]]:
        """Write the index as ``root/name``; returns (its lists file or None, the shards that file holds)."""

    @abstractmethod
    def _search_vectors(self, queries: np.ndarray, kk: int, params: Any | None) -> tuple[np.ndarray, np.ndarray]:
        """FAISS (distances, labels) of the top ``kk`` vectors per query vector."""

    def search(
        self,
        queries: np.ndarray,
        k: int,
        params: Any | None = None,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        refine_k: int | None = None,
    ) -> Found:
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
            return Found(ids, scores)
        try:
            exact = self.item_scores(queries, ids)
        except KeyError as exc:  # a record deleted since this index last synced: the codes' order
            log.warning("exact re-rank skipped: record %s is gone; answering from the index's scores", exc)
            return Found(ids[:k], scores[:k])
        order = np.argsort(-exact, kind="stable")[:k]
        return Found(ids[order], exact[order])

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
