"""Exact top-k over owners that have several vectors each (BLIP-2's 32 query vectors).

An owner's score is the max over (query vector, owner vector) pairs. The index holds every
owner vector under FAISS id ``owner * vectors_per_owner + j``. We search the top ``kk`` vectors
for each query vector and keep each owner's best observed score. Let ``T`` be the largest of
the per-query ``kk``-th scores. Any owner missing from some query's list scores below that
query's ``kk``-th score there, so an owner whose observed max is ``>= T`` has its exact score, and
every other owner scores below ``T``. If at least ``k`` owners reach ``T`` the answer is exact;
otherwise ``kk`` doubles (up to every vector). For one query vector and one vector per owner
this is plain top-k.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def owner_max(distances: np.ndarray, labels: np.ndarray, vectors_per_owner: int) -> tuple[np.ndarray, np.ndarray]:
    """(owners, best score) sorted by score descending, ties by owner id."""
    valid = labels >= 0
    owners = labels[valid] // vectors_per_owner
    scores = distances[valid]
    if owners.size == 0:
        return owners.astype(np.int64), scores.astype(np.float32)
    order = np.lexsort((-scores, owners))
    o, s = owners[order], scores[order]
    first = np.empty(o.shape, dtype=bool)
    first[0] = True
    first[1:] = o[1:] != o[:-1]
    uo, us = o[first], s[first]
    rank = np.lexsort((uo, -us))
    return uo[rank].astype(np.int64), us[rank].astype(np.float32)


def topk_owners(
    search: SearchFn, queries: np.ndarray, k: int, vectors_per_owner: int, ntotal: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` owners by max-sim. ``queries`` is [nq, d]. Returns (owner ids, scores)."""
    if k <= 0 or ntotal <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, queries.shape[-1])
    kk = min(ntotal, k if vectors_per_owner == 1 else 2 * k)
    while True:
        distances, labels = search(queries, kk)
        owners, scores = owner_max(distances, labels, vectors_per_owner)
        if kk >= ntotal:
            return owners[:k], scores[:k]
        threshold = float(distances[:, kk - 1].max())
        if int(np.count_nonzero(scores >= threshold)) >= k:
            return owners[:k], scores[:k]
        kk = min(ntotal, kk * 2)
