"""k-NN queries with clip-retrieval's semantics, on a SearchEngine (no HTTP here).

- ``modality="image"`` searches the collection's items by vector: exactly the shortlist of
  ``search_text`` / ``search_image`` (same index, same selection), so ids and order match.
- ``modality="text"`` on an *image* collection searches its captions: the captions of the
  nearest images, de-duplicated case-insensitively, records without a caption skipped. On a
  *text* collection both modalities search its texts.
- ``deduplicate`` drops near-duplicate embeddings (search/dedup.py), and ``only_allowed``
  hides records whose moderation decision is anything but ``allow`` (records with no decision
  stay: nothing flagged them). Dropped duplicates and captions are refilled from deeper results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from blipsearch.errors import InvalidInputError
from blipsearch.limits import KNN_MAX_RESULTS
from rerank.base import Candidate
from search import dedup
from search.engine import QueryOptions, SearchEngine
from search.filters import Filters

MODALITIES = ("image", "text")
NOT_ALLOWED: list[Literal["flag", "review", "block"]] = ["flag", "review", "block"]
MAX_QUERY_VECTORS = 32  # a BLIP-2 image query has one vector per Q-Former query token


@dataclass
class KnnRequest:
    n: int
    modality: str = "image"
    deduplicate: bool = False
    dedup_threshold: float = dedup.DEFAULT_THRESHOLD
    only_allowed: bool = False
    max_depth: int = KNN_MAX_RESULTS
    filters: Filters | None = None  # the column filters a query-language text carries (search/query/)


@dataclass
class KnnResult:
    """Up to ``n`` (id, similarity), best first, and the index shards left out (partial mode)."""

    hits: list[Candidate]
    missing_shards: tuple[int, ...] = field(default=())


def embedding_query(engine: SearchEngine, values: object) -> np.ndarray:
    """A caller's query vector(s): [dim] or [m, dim] numbers, L2-normalised per row."""
    dim = engine.coll.manifest.dim
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"embedding_input must be a list of {dim} numbers.") from None
    rows = arr.reshape(1, -1) if arr.ndim == 1 else arr
    if arr.ndim not in (1, 2) or rows.shape[1] != dim or not 1 <= rows.shape[0] <= MAX_QUERY_VECTORS:
        raise InvalidInputError(
            f"embedding_input has shape {list(arr.shape)}, but collection {engine.coll.name!r} has dimension {dim}: "
            f"send {dim} numbers (or up to {MAX_QUERY_VECTORS} rows of {dim})."
        )
    if not np.isfinite(rows).all():
        raise InvalidInputError("embedding_input has a NaN or infinite value.")
    scale = np.abs(rows).max(axis=1, keepdims=True)  # scaled first: 1e308s must not overflow the norm
    if (scale == 0).any():
        raise InvalidInputError("embedding_input is a zero vector.")
    rows = rows / scale
    q = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    return q[0] if arr.ndim == 1 else q


def knn(engine: SearchEngine, query: np.ndarray, req: KnnRequest) -> KnnResult:
    """Up to ``req.n`` (id, similarity), best first, with every index shard any of its searches
    left out."""
    if req.modality not in MODALITIES:
        raise InvalidInputError(f"Unknown modality {req.modality!r}: use image or text.")
    filters = req.filters.model_copy() if req.filters is not None else None
    if req.only_allowed:
        filters = filters or Filters()
        filters.exclude_decisions = NOT_ALLOWED
    options = QueryOptions(filters=filters) if filters is not None else None
    captions = req.modality == "text" and engine.kind == "images"
    depth = max(1, min(req.n, req.max_depth))
    if captions or req.deduplicate:
        depth = min(req.max_depth, max(2 * req.n, 50))
    missing: set[int] = set()
    while True:
        cands, left_out = engine.search_vector(query, depth, options)
        missing.update(left_out)
        exhausted = len(cands) < depth or depth >= req.max_depth
        if captions:
            cands = _unique_captions(engine, cands)
        if req.deduplicate and len(cands) > 1:
            vecs = engine.index.vectors(np.array([c.id for c in cands], dtype=np.int64))
            mask = dedup.keep_mask(vecs, req.dedup_threshold)
            cands = [c for c, keep in zip(cands, mask, strict=True) if keep]
        if len(cands) >= req.n or exhausted:
            return KnnResult(cands[: req.n], tuple(sorted(missing)))
        depth = min(req.max_depth, depth * 4)


def _unique_captions(engine: SearchEngine, cands: list[Candidate]) -> list[Candidate]:
    records = engine.coll.get_records([c.id for c in cands])
    seen: set[str] = set()
    out = []
    for c in cands:
        cap = (records.get(c.id) or {}).get("caption")
        if cap and cap.strip().lower() not in seen:
            seen.add(cap.strip().lower())
            out.append(c)
    return out
