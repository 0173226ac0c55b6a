"""All fusion methods, one module each (rerank/fusion/base.py has the two base classes).

Score fusions (``--fusion``) combine ITM and ITC after re-ranking; ``rrf`` fuses the
vector and keyword rankings of hybrid search.
"""

from __future__ import annotations

import numpy as np

from blipsearch.errors import InvalidInputError
from rerank.fusion.base import RankFusion, ScoreFusion
from rerank.fusion.itc import ItcOnly
from rerank.fusion.itm import ItmOnly
from rerank.fusion.itm_itc import ItmPlusItc
from rerank.fusion.rrf import RRF_K, ReciprocalRankFusion, rrf

SCORE_FUSIONS: dict[str, ScoreFusion] = {f.name: f for f in (ItmPlusItc(), ItmOnly(), ItcOnly())}
FUSIONS = tuple(SCORE_FUSIONS)

__all__ = [
    "FUSIONS",
    "RRF_K",
    "SCORE_FUSIONS",
    "RankFusion",
    "ReciprocalRankFusion",
    "ScoreFusion",
    "check_fusion",
    "fuse",
    "rrf",
]


def check_fusion(fusion: str) -> str:
    if fusion not in SCORE_FUSIONS:
        raise InvalidInputError(f"Unknown fusion {fusion!r}: use one of {', '.join(FUSIONS)}.")
    return fusion


def fuse(itc: np.ndarray, itm_logits: np.ndarray, fusion: str) -> tuple[np.ndarray, np.ndarray]:
    """(fused score, P(match)) for [n] ITC scores and [n, 2] ITM logits."""
    from models.itm import softmax_match  # torch's module: imported when a re-rank runs, not at start-up

    method = SCORE_FUSIONS[check_fusion(fusion)]
    prob = softmax_match(itm_logits, itm_logits.dtype)
    return method.score(itc, itm_logits, prob), prob
