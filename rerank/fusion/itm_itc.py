"""``itm+itc`` (default): ITM match logit + ITC cosine, the LAVIS / BLIP evaluation ranking
(``score_matrix[i, topk] = itm_logit[:, 1] + topk_sim``)."""

from __future__ import annotations

import numpy as np

from rerank.fusion.base import ScoreFusion


class ItmPlusItc(ScoreFusion):
    name = "itm+itc"

    def score(self, itc: np.ndarray, itm_logits: np.ndarray, itm_prob: np.ndarray) -> np.ndarray:
        return itm_logits[:, 1] + itc
