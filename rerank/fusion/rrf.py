"""Reciprocal rank fusion (RRF) of ranked lists: score(d) = Σ_lists 1 / (k + rank(d)), rank from 1.

Cormack, Clarke & Büttcher (SIGIR 2009); k = 60 by default. Items missing from a list get
nothing from it. Ties are broken by the best single-list rank, then by id, so the fused
order is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

from rerank.fusion.base import RankFusion

RRF_K = 60


class ReciprocalRankFusion(RankFusion):
    name = "rrf"

    def __init__(self, k: int = RRF_K) -> None:
        self.k = k

    def fuse(self, lists: Sequence[Sequence[int]]) -> list[tuple[int, float]]:
        scores: dict[int, float] = {}
        best: dict[int, int] = {}
        for ranked in lists:
            for rank, item in enumerate(ranked, start=1):
                scores[item] = scores.get(item, 0.0) + 1.0 / (self.k + rank)
                best[item] = min(best.get(item, rank), rank)
        return sorted(scores.items(), key=lambda kv: (-kv[1], best[kv[0]], kv[0]))


def rrf(lists: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    return ReciprocalRankFusion(k).fuse(lists)
