"""Retrieval metrics from ranked candidate lists.

Text retrieval (TR, image→text): for each image, the rank of its best-ranked ground-truth
caption. Image retrieval (IR, text→image): for each caption, the rank of its image. R@K is
the percentage of queries whose rank is < K; MRR is the mean of 1 / (rank + 1). A query whose
ground truth is absent from its (truncated) ranked list has rank infinity: it counts as a miss
for every K and contributes 0 to MRR.

Ties: ``rank_from_scores`` orders by score descending, then by candidate index ascending, so
a ground truth tied with an earlier-indexed candidate ranks after it. The rule is fixed so
results are reproducible across runs and index types.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS = (1, 5, 10)


def rank_from_scores(scores: np.ndarray) -> np.ndarray:
    """[n_queries, n_candidates] scores → candidate indices best-first (ties: lower index first)."""
    n = scores.shape[1]
    return np.lexsort((np.broadcast_to(np.arange(n), scores.shape), -scores), axis=1)


def first_relevant_rank(ranked: np.ndarray, relevant: Sequence[set[int]]) -> np.ndarray:
    """Rank (0-based) of the first relevant candidate in each row of ``ranked``; inf if none."""
    out = np.full(len(relevant), np.inf)
    for q, rel in enumerate(relevant):
        if not rel:
            continue
        hits = np.flatnonzero(np.isin(ranked[q], list(rel)))
        if hits.size:
            out[q] = hits[0]
    return out


def recall_at(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[int, float]:
    return {k: float(100.0 * np.mean(ranks < k)) if len(ranks) else 0.0 for k in ks}


def mrr(ranks: np.ndarray) -> float:
    return float(np.mean(np.where(np.isfinite(ranks), 1.0 / (ranks + 1.0), 0.0))) if len(ranks) else 0.0


def retrieval_metrics(
    tr_ranked: np.ndarray, ir_ranked: np.ndarray, img_to_txts: Sequence[set[int]], txt_to_img: Sequence[int]
) -> dict[str, float]:
    """The metric set from ranked lists: tr_r1..tr_r10, ir_r1..ir_r10, their means, r_mean and MRRs,
    plus the same recalls under the names LAVIS reports (``txt_r1``.. ``img_r_mean``, ``r_mean``)."""
    tr = first_relevant_rank(tr_ranked, img_to_txts)
    ir = first_relevant_rank(ir_ranked, [{i} for i in txt_to_img])
    tr_r, ir_r = recall_at(tr), recall_at(ir)
    out = {f"tr_r{k}": v for k, v in tr_r.items()} | {f"ir_r{k}": v for k, v in ir_r.items()}
    out["tr_mean"] = float(np.mean(list(tr_r.values())))
    out["ir_mean"] = float(np.mean(list(ir_r.values())))
    out["r_mean"] = (out["tr_mean"] + out["ir_mean"]) / 2
    out["tr_mrr"] = mrr(tr)
    out["ir_mrr"] = mrr(ir)
    return out | lavis_keys(out)


def lavis_keys(m: dict[str, float]) -> dict[str, float]:
    """LAVIS's names (``_report_metrics`` of its retrieval tasks): txt = TR (image→text), img = IR."""
    out = {f"txt_r{k}": m[f"tr_r{k}"] for k in KS} | {f"img_r{k}": m[f"ir_r{k}"] for k in KS}
    out["txt_r_mean"], out["img_r_mean"], out["r_mean"] = m["tr_mean"], m["ir_mean"], m["r_mean"]
    return out
