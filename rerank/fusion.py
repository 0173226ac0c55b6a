"""How ITM and ITC scores combine into the ranking score.

* ``itm+itc`` (default): ITM match logit + ITC cosine, the LAVIS / BLIP evaluation ranking
  (``score_matrix[i, topk] = itm_logit[:, 1] + topk_sim``).
* ``itm``: the ITM match probability alone (a calibrated 0..1 score; good for cut-offs).
* ``itc``: no re-ranking; the shortlist order stands.
"""

from __future__ import annotations

import numpy as np

from blipsearch.errors import InvalidInputError

FUSIONS = ("itm+itc", "itm", "itc")


def check_fusion(fusion: str) -> str:
    if fusion not in FUSIONS:
        raise InvalidInputError(f"Unknown fusion {fusion!r}: use one of {', '.join(FUSIONS)}.")
    return fusion


def fuse(itc: np.ndarray, itm_logits: np.ndarray, fusion: str) -> tuple[np.ndarray, np.ndarray]:
    """(fused score, P(match)) for [n] ITC scores and [n, 2] ITM logits."""
    check_fusion(fusion)
    z = itm_logits - itm_logits.max(axis=1, keepdims=True)
    prob = np.exp(z[:, 1]) / np.exp(z).sum(axis=1)
    if fusion == "itm+itc":
        return itm_logits[:, 1] + itc, prob
    if fusion == "itm":
        return prob, prob
    return itc.astype(np.float64), prob
