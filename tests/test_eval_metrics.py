"""The recall / MRR code on hand-built similarity matrices with known ranks."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.metrics import first_relevant_rank, rank_from_scores, recall_at, retrieval_metrics


def test_ranks_with_several_captions_per_image():
    # 2 images, 5 captions: image 0 owns captions {0, 1, 2}, image 1 owns {3, 4}.
    img_to_txts = [{0, 1, 2}, {3, 4}]
    txt_to_img = [0, 0, 0, 1, 1]
    sim = np.array(
        [
            [0.1, 0.9, 0.2, 0.95, 0.0],  # image 0: best is caption 3 (wrong), then 1 (right) → rank 1
            [0.5, 0.1, 0.2, 0.3, 0.4],  # image 1: 0 (wrong), 4 (right) → rank 1
        ]
    )
    tr = first_relevant_rank(rank_from_scores(sim), img_to_txts)
    assert tr.tolist() == [1, 1]
    ir = first_relevant_rank(rank_from_scores(sim.T), [{i} for i in txt_to_img])
    # caption 0: image 1 (0.5) > image 0 (0.1) → rank 1; caption 1 → 0; caption 2 → 0 (0.2 = 0.2, tie → lower index);
    # caption 3: image 0 (0.95) → rank 1; caption 4: image 1 (0.4) → 0.
    assert ir.tolist() == [1, 0, 0, 1, 0]
    m = retrieval_metrics(rank_from_scores(sim), rank_from_scores(sim.T), img_to_txts, txt_to_img)
    assert m["tr_r1"] == 0.0 and m["tr_r5"] == 100.0
    assert m["ir_r1"] == pytest.approx(60.0) and m["ir_r5"] == 100.0
    assert m["tr_mrr"] == pytest.approx(0.5) and m["ir_mrr"] == pytest.approx((0.5 + 1 + 1 + 0.5 + 1) / 5)
    assert m["r_mean"] == pytest.approx((m["tr_mean"] + m["ir_mean"]) / 2)


def test_ties_break_by_lower_candidate_index():
    sim = np.array([[0.5, 0.5, 0.5]])
    assert rank_from_scores(sim).tolist() == [[0, 1, 2]]
    assert first_relevant_rank(rank_from_scores(sim), [{2}]).tolist() == [2]
    assert first_relevant_rank(rank_from_scores(sim), [{0}]).tolist() == [0]


def test_image_whose_captions_are_all_missed():
    # Truncated ranked lists (depth 2): image 1's captions never appear → rank inf, a miss everywhere.
    ranked = np.array([[0, 2], [0, 1]])
    ranks = first_relevant_rank(ranked, [{0}, {2, 3}])
    assert ranks[0] == 0 and np.isinf(ranks[1])
    assert recall_at(ranks) == {1: 50.0, 5: 50.0, 10: 50.0}
    m = retrieval_metrics(ranked, np.array([[0], [1], [1], [1]]), [{0}, {2, 3}], [0, 1, 1, 1])
    assert m["tr_mrr"] == pytest.approx(0.5)
    assert m["ir_r1"] == 100.0


def test_recall_at_k_boundaries():
    ranks = np.array([0, 4, 5, 9, 10, np.inf])
    assert recall_at(ranks) == pytest.approx({1: 100 / 6, 5: 200 / 6, 10: 400 / 6})
