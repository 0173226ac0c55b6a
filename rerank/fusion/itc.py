"""``itc``: no re-ranking; the ITC shortlist order stands."""

from __future__ import annotations

import numpy as np

from rerank.fusion.base import ScoreFusion


class ItcOnly(ScoreFusion):
    name = "itc"

    def score(self, itc: np.ndarray, itm_logits: np.ndarray, itm_prob: np.ndarray) -> np.ndarray:
        return itc.astype(np.float64)
