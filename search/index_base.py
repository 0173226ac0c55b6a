"""The index interface every index kind implements, and what the kinds share.

Three kinds, one class each:

* ``search/vector_index.py:VectorIndex``: an in-memory FAISS index (GPU replica when FAISS sees one);
* ``search/ondisk.py:OnDiskIndex``: a memory-mapped IVF base, an in-memory delta, tombstones;
* ``search/sharded.py:ShardedIndex``: a fan-out over index shards (read only: re-made from the records).

``SearchIndex`` is what a query needs (``SearchEngine`` only uses it); ``WritableIndex`` adds
what keeping an index in step with its records needs (``search/index_store.py``). A sharded
index is a ``SearchIndex`` only: it never carries methods it would have to refuse.

A search returns ``Found``: the (ids, scores) pair, and the index shards it left out.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from blipsearch.errors import InvalidInputError
from blipsearch.limits import MAX_REFINE_K
from search.index_choice import is_compressed

Lookup = Callable[[np.ndarray], np.ndarray]


class Found(tuple[np.ndarray, np.ndarray]):
    """A search's (ids, scores), unpacked as a pair; ``missing_shards``: the index shards a
    partial sharded search left out (its answer is then the other shards' only)."""

    missing_shards: tuple[int, ...]

    def __new__(cls, ids: np.ndarray, scores: np.ndarray, missing_shards: tuple[int, ...] = ()) -> Found:
        found = super().__new__(cls, (ids, scores))
        found.missing_shards = tuple(missing_shards)
        return found

    @property
    def ids(self) -> np.ndarray:
        return self[0]

    @property
    def scores(self) -> np.ndarray:
        return self[1]


@runtime_checkable
class SearchIndex(Protocol):
    """What a query asks of an index: top-k with per-call parameters and an id selection
    (``allowed`` or ``excluded`` record ids), and the stored vectors of records."""

    dim: int
    vectors_per_item: int
    spec: str
    defaults: dict[str, int]

    @property
    def ntotal(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def compressed(self) -> bool: ...

    def make_params(self, nprobe: int | None = None, ef_search: int | None = None) -> Any | None: ...
    def refine_depth(self, k: int, refine_k: int | None = None) -> int: ...
    def exact_scores(self, k: int, refine_k: int | None = None) -> bool: ...
    def search(
        self,
        queries: np.ndarray,
        k: int,
        params: Any | None = None,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        refine_k: int | None = None,
    ) -> Found: ...
    def vectors(self, ids: np.ndarray) -> np.ndarray: ...
    def vectors_of(self, rid: int) -> np.ndarray: ...
    def item_scores(self, query: np.ndarray, ids: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class WritableIndex(SearchIndex, Protocol):
    """An index kept in step with its records: adds, removes, and saved as files."""

    synced: dict[str, int]
    lookup: Lookup | None

    def add(self, ids: np.ndarray, embeddings: np.ndarray) -> None: ...
    def remove(self, ids: np.ndarray) -> int: ...
    def after_sync(self, shards: list[Any]) -> None: ...
    def save(self, root: Path, name: str, seq: int, covered: list[str]) -> tuple[str | None, list[str]]: ...


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


def check_refine_k(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_REFINE_K:
        raise InvalidInputError(f"refine_k must be between 0 and {MAX_REFINE_K} (0 or 1: off), got {value!r}.")
    return value


class RecordVectors:
    """What every index kind shares: its shape (``dim``, ``vectors_per_item``, ``spec``),
    tuned defaults, the refine depth, and records' stored vectors (``_stored``, per kind) with
    the exact max-sim scores computed from them. ``lookup`` reads stored vectors from the records."""

    def __init__(self, dim: int, vectors_per_item: int, spec: str, lookup: Lookup | None = None) -> None:
        self.dim = dim
        self.vectors_per_item = vectors_per_item
        self.spec = spec
        # Tuned per-index defaults ({"nprobe": 16} / {"efSearch": 64} / {"refine_k": 100}).
        self.defaults: dict[str, int] = {}
        self.lookup: Lookup | None = lookup

    @property
    def on_gpu(self) -> bool:
        return False

    @functools.cached_property
    def compressed(self) -> bool:
        """Whether the index holds lossy codes (PQ / SQ ...), which an exact refine improves."""
        return is_compressed(self.spec)

    def refine_depth(self, k: int, refine_k: int | None = None) -> int:
        """How many candidates a top-``k`` search takes before the exact re-rank: ``refine_k``
        (per call) or the tuned default, when the index is compressed and it exceeds k; else k."""
        value = check_refine_k(refine_k if refine_k is not None else self.defaults.get("refine_k", 0))
        if not self.compressed or value <= max(k, 1):
            return k
        return value

    def exact_scores(self, k: int, refine_k: int | None = None) -> bool:
        """Whether a top-``k`` search's scores are the exact ITC cosines (exact codes, or a refine)."""
        return not self.compressed or self.refine_depth(k, refine_k) > k

    def _looked_up(self, ids: np.ndarray) -> np.ndarray:
        """Records' stored vectors read through ``lookup``: [n * vectors_per_item, dim] float32."""
        if self.lookup is None:
            raise RuntimeError(f"{type(self).__name__} opened without a record lookup")
        return np.asarray(self.lookup(ids), np.float32).reshape(len(ids) * self.vectors_per_item, self.dim)

    def _stored(self, ids: np.ndarray) -> np.ndarray:
        """[n * vectors_per_item, dim] stored vectors of records ``ids`` (default: the records')."""
        return self._looked_up(ids)

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
