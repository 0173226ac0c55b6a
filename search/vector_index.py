"""The in-memory FAISS index kind: a FAISS index over a collection's vectors (record ids as
FAISS ids, search/specs.py), with a GPU replica when FAISS sees a GPU.

Thread safety: ``add`` and ``search`` may run concurrently (the API adds uploads while it
answers queries). One lock covers ``add`` and ``search``, so a search sees either all or
none of an added batch. Per-call search parameters and the exact refine: search/faiss_index.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from blipsearch.errors import InvalidInputError, StorageError
from search import faiss_backend as fb
from search.faiss_index import FaissIndex
from search.index_base import MAX_REFINE_K, without
from storage.atomic import atomic_write_with

__all__ = ["MAX_REFINE_K", "VectorIndex", "without"]
log = logging.getLogger(__name__)


class VectorIndex(FaissIndex):
    """An in-memory FAISS index (``cpu``, and ``gpu`` when placed on one): owns the vectors,
    adds and removes them in place, reconstructs stored vectors (IVF: through a direct map),
    and saves itself as one ``.faiss`` file."""

    def __init__(self, cpu_index: Any, dim: int, vectors_per_item: int, spec: str) -> None:
        super().__init__(cpu_index, dim, vectors_per_item, spec)
        self.gpu: Any | None = fb.to_gpu(cpu_index)
        self._direct_map_ready = False

    @classmethod
    def empty(cls, spec: str, dim: int, vectors_per_item: int) -> VectorIndex:
        return cls(fb.new_index(spec, dim), dim, vectors_per_item, spec)

    @property
    def on_gpu(self) -> bool:
        return self.gpu is not None

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

    def save(self, root: Path, name: str, seq: int, covered: list[str]) -> tuple[str | None, list[str]]:
        """Write the index as ``root/name`` (atomically). Returns (data file, base shards): none here."""
        atomic_write_with(root / name, lambda p: fb.write(self.cpu, p))
        return None, []

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
        """Reconstructed from the index; read from the records (``lookup``) for compressed codes,
        which reconstruct only approximately."""
        if self.compressed and self.lookup is not None:
            return self._looked_up(ids)
        with self._lock:
            self._ensure_direct_map()
            return np.asarray(self.cpu.reconstruct_batch(self.faiss_ids(ids)), dtype=np.float32)
