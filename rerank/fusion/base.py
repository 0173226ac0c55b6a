"""Fusion: how scores or rankings combine into the order results are returned in.

* ``ScoreFusion``: per candidate, its ITC cosine and ITM logits → one ranking score
  (re-ranking, the BLIP protocol).
* ``RankFusion``: several ranked lists of ids → one list (hybrid vector + keyword search).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np


class ScoreFusion(ABC):
    name: str

    @abstractmethod
    def score(self, itc: np.ndarray, itm_logits: np.ndarray, itm_prob: np.ndarray) -> np.ndarray:
        """[n] ranking scores from [n] ITC cosines, [n, 2] ITM logits and [n] P(match)."""


class RankFusion(ABC):
    name: str

    @abstractmethod
    def fuse(self, lists: Sequence[Sequence[int]]) -> list[tuple[int, float]]:
        """(id, fused score) pairs, best first, from ranked lists (best first)."""
