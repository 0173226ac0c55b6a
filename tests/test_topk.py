"""The exact multi-vector top-k against brute force, on random and adversarial data."""

from __future__ import annotations

import numpy as np
import pytest

from search.vector_index import VectorIndex
from tests.helpers import assert_same_ranking, brute_force_scores, brute_force_topk


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("vpi", [1, 4, 32])
@pytest.mark.parametrize("nq", [1, 3, 32])
@pytest.mark.parametrize("seed", range(3))
def test_topk_equals_brute_force(vpi, nq, seed):
    rng = np.random.default_rng(seed)
    n, d = 300, 16
    # Clustered data: owners share a centre, so one owner's vectors crowd the top of the list.
    centres = rng.normal(size=(n, 1, d))
    emb = _unit(centres + 0.3 * rng.normal(size=(n, vpi, d)))
    ids = rng.permutation(10_000)[:n].astype(np.int64)  # non-contiguous ids
    index = VectorIndex.empty("Flat", d, vpi)
    index.add(ids, emb if vpi > 1 else emb[:, 0])
    query = _unit(rng.normal(size=(nq, d)))
    for k in (1, 5, 17, n, n + 10):
        got_ids, got_scores = index.search(query, k)
        _, ref_scores = brute_force_topk(query, emb, ids, k)
        # FAISS (fp32) against numpy (fp64): id for id, except float ties may swap.
        assert_same_ranking(got_ids, ids, brute_force_scores(query, emb), k)
        np.testing.assert_allclose(got_scores, ref_scores, atol=1e-5)


def test_empty_index_returns_nothing():
    index = VectorIndex.empty("Flat", 8, 1)
    ids, scores = index.search(np.ones(8, np.float32), 10)
    assert ids.size == 0 and scores.size == 0
