"""Near-duplicate removal over a ranked result list (clip-retrieval's ``deduplicate``).

A result is dropped when its embedding's cosine with a *kept*, higher-ranked result is at
least ``threshold`` (greedy, in rank order, so the best-ranked copy of a group stays). Items
with several vectors (BLIP-2: 32 query-token vectors) are compared by their mean vector,
re-normalised. The pairs above the threshold come from a FAISS range search, so memory grows
with the number of near pairs, not with n².
"""

from __future__ import annotations

import numpy as np

from blipsearch.limits import DEDUP_THRESHOLD
from search import faiss_backend as fb

DEFAULT_THRESHOLD = DEDUP_THRESHOLD  # clip-retrieval's clip_back uses the same cosine cut-off


def item_vectors(vectors: np.ndarray) -> np.ndarray:
    """[n, dim] or [n, v, dim] -> [n, dim] float32, L2-normalised (mean over v first)."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 3:
        v = v.mean(axis=1)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(v / norms, dtype=np.float32)


def keep_mask(vectors: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Boolean mask over ranked items: False for a near-duplicate of a kept higher-ranked item."""
    emb = item_vectors(vectors)
    n = len(emb)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    f = fb.faiss()
    index = f.IndexFlatIP(emb.shape[1])
    index.add(emb)
    # FAISS keeps similarities strictly above the radius: search a hair lower, then test >= exactly
    lims, _, neighbours = index.range_search(emb, float(threshold) - 1e-5)
    for i in range(n):
        near = neighbours[lims[i] : lims[i + 1]]
        earlier = near[near < i]
        earlier = earlier[keep[earlier]]
        if earlier.size and bool((emb[earlier] @ emb[i] >= threshold).any()):
            keep[i] = False
    return keep
