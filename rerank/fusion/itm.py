"""``itm``: the ITM match probability alone (a calibrated 0..1 score; good for cut-offs)."""

from __future__ import annotations

import numpy as np

from rerank.fusion.base import ScoreFusion


class ItmOnly(ScoreFusion):
    name = "itm"

    def score(self, itc: np.ndarray, itm_logits: np.ndarray, itm_prob: np.ndarray) -> np.ndarray:
        return itm_prob
