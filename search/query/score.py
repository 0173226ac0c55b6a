"""The score of a weighted query (search/query/parts.py) and the search that ranks by it.

Two rules, one per kind of model (docs/queries.md says why):

* single-vector models: ``q = normalise(sum_i w_i e_i)`` and ``score(x) = q . x``, the ITC
  cosine of one query vector. Ranking by it is one index search, exact wherever the index is
  (on Flat it is brute force). It is also the weighted sum of per-part ITC scores divided by
  ``|sum_i w_i e_i|``, a positive constant: the two usual definitions rank the same.
* multi-vector models (BLIP-2): ``score(x) = sum_i w_i maxsim(P_i, x)``: part ``i``'s query
  vectors ``P_i`` (1 for a text, 32 for an image or an image record) against the record's
  32 vectors, the same max-sim a one-part query scores, combined as the weighted sum.
  No single vector gives it, so the search takes a shortlist for each positive part and
  re-scores the union exactly. On an exact (Flat) index the shortlists deepen until a bound
  proves that no record outside them can enter the top (a threshold algorithm; at worst every
  record is scored): the result is the brute force of the score. On approximate indexes the
  shortlists are searched once and re-scored exactly.

Single-vector queries on approximate indexes also take the union of the combined vector's
shortlist and the positive parts' shortlists, re-scored exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blipsearch.errors import InvalidInputError
from rerank.base import Candidate
from search.index_base import SearchIndex
from search.query.parts import Part

SINGLE_RULE = "cosine of the normalised weighted sum of the parts' vectors"
MULTI_RULE = "weighted sum of the parts' max-sim scores"
Shortlist = Callable[[np.ndarray, int], tuple[list[Candidate], tuple[int, ...]]]


@dataclass
class Encoded:
    """A query's parts with their ITC vectors (``vectors[i]``: [m_i, dim], rows L2-normalised)."""

    parts: list[Part]
    vectors: list[np.ndarray]
    single: bool
    combined: np.ndarray | None = None  # the single-vector rule's query vector
    timing_ms: dict[str, float] = field(default_factory=dict)

    @property
    def weights(self) -> np.ndarray:
        return np.array([p.weight for p in self.parts], np.float64)


def rule(single: bool) -> str:
    return SINGLE_RULE if single else MULTI_RULE


def _rows(v: np.ndarray, dim: int) -> np.ndarray:
    rows = np.asarray(v, np.float32).reshape(-1, dim)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if not np.isfinite(rows).all() or (norms == 0).any():
        raise InvalidInputError("A query vector is zero or not finite.")
    return rows / norms


def encode(parts: list[Part], dim: int, single: bool, encode_part: Callable[[Part], np.ndarray]) -> Encoded:
    """Each part's vectors (``encode_part``: the engine's encoder for its kind), and for the
    single-vector rule the normalised weighted sum (refused when the parts cancel out)."""
    t0 = time.perf_counter()
    vectors = [_rows(encode_part(p), dim) for p in parts]
    enc = Encoded(parts, vectors, single, timing_ms={"encode": round((time.perf_counter() - t0) * 1e3, 3)})
    if single:
        total = np.zeros(dim, np.float64)
        for p, v in zip(parts, vectors, strict=True):
            total += p.weight * v[0].astype(np.float64)
        norm = float(np.linalg.norm(total))
        if not norm > 1e-6:
            raise InvalidInputError("The query's parts cancel out (their weighted sum is zero): change a weight.")
        enc.combined = (total / norm).astype(np.float32)
    return enc


def scores(enc: Encoded, index: SearchIndex, ids: np.ndarray) -> np.ndarray:
    """The documented score of records ``ids`` (float64), from their stored vectors."""
    ids = np.asarray(ids, np.int64)
    if enc.single:
        assert enc.combined is not None
        return index.item_scores(enc.combined, ids).astype(np.float64)
    out = np.zeros(len(ids), np.float64)
    for p, v in zip(enc.parts, enc.vectors, strict=True):
        out += p.weight * index.item_scores(v, ids).astype(np.float64)
    return out


def brute_force(enc: Encoded, stored: np.ndarray) -> np.ndarray:
    """The documented score of every record from ``stored`` ([n, vectors_per_item, dim]):
    the reference the search equals on exact indexes (tests and docs use it)."""
    x = np.asarray(stored, np.float64)
    if enc.single:
        assert enc.combined is not None
        return (x @ enc.combined.astype(np.float64)).max(axis=1)
    out = np.zeros(x.shape[0], np.float64)
    for p, v in zip(enc.parts, enc.vectors, strict=True):
        out += p.weight * (x @ v.astype(np.float64).T).reshape(x.shape[0], -1).max(axis=1)
    return out


@dataclass
class Ranked:
    """The top ``depth`` records by the score, and how the search got them."""

    cands: list[Candidate]
    missing: tuple[int, ...]
    shortlisted: int  # distinct records re-scored (0: the index's own scores were used)
    rounds: int
    exact: bool  # the result is the brute force of the score


def rank(enc: Encoded, index: SearchIndex, shortlist: Shortlist, depth: int, exact_index: bool) -> Ranked:
    """Rank by the score (module docstring): ``shortlist(query, n)``: the index's top ``n``
    under the query's selection, with the shards it left out."""
    if enc.single and exact_index:
        assert enc.combined is not None
        cands, missing = shortlist(enc.combined, depth)
        return Ranked(cands, missing, 0, 1, True)
    records = max(1, index.ntotal // max(1, index.vectors_per_item))
    positive = [i for i, p in enumerate(enc.parts) if p.weight > 0]
    n = min(records, max(depth, 2 * depth, 64))
    low = _lower_bounds(enc, shortlist) if exact_index and not enc.single else {}
    missing: set[int] = set()
    rounds = 0
    while True:
        rounds += 1
        lists: list[list[Candidate]] = []
        if enc.single:
            assert enc.combined is not None
            got, left = shortlist(enc.combined, n)
            lists.append(got)
            missing.update(left)
        for i in positive:
            got, left = shortlist(enc.vectors[i], n)
            lists.append(got)
            missing.update(left)
        ids = np.array(sorted({c.id for got in lists for c in got}), np.int64)
        s = scores(enc, index, ids) if ids.size else np.zeros(0)
        order = np.argsort(-s, kind="stable")[:depth]
        cands = [Candidate(int(ids[j]), float(s[j])) for j in order]
        if not exact_index or enc.single:
            return Ranked(cands, tuple(sorted(missing)), int(ids.size), rounds, False)
        if n >= records or any(len(got) < n for got in lists):  # some list holds every allowed record
            return Ranked(cands, tuple(sorted(missing)), int(ids.size), rounds, True)
        bound = sum(enc.parts[i].weight * got[-1].itc for i, got in zip(positive, lists, strict=True))
        bound += sum(enc.parts[i].weight * lo for i, lo in low.items())
        if len(cands) >= depth and cands[-1].itc >= bound:
            return Ranked(cands, tuple(sorted(missing)), int(ids.size), rounds, True)
        n = min(records, n * 4)


def _lower_bounds(enc: Encoded, shortlist: Shortlist) -> dict[int, float]:
    """For each negative part, a lower bound of its max-sim over the allowed records: the
    smallest inner product of its vectors with any stored vector (the top-1 of the negated
    query), so that ``w_i * maxsim <= w_i * bound`` bounds an unseen record's score."""
    out: dict[int, float] = {}
    for i, p in enumerate(enc.parts):
        if p.weight < 0:
            got, _ = shortlist(-enc.vectors[i], 1)
            out[i] = -got[0].itc if got else -1.0
    return out


def describe(enc: Encoded) -> dict[str, Any]:
    return {"rule": rule(enc.single), "parts": [p.describe() for p in enc.parts]}
