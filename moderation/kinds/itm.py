"""What the BLIP-score kinds share: an image's vision tokens for the ITM head (computed once per
batch by the moderator, or lazily by the policy's own ITM model) and the ITM match probability
of one image with a list of texts, its cross-attention K/V computed once for all of them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from blipsearch.errors import NoItmModelError
from models.itm import ItmScorer, softmax_match

if TYPE_CHECKING:
    from PIL import Image

    from models.base import Embedder


class LazyTokens:
    """An image's tokens from the ITM model's own vision encoder, computed on first use."""

    def __init__(self, scorer: ItmScorer | None, image: Image.Image) -> None:
        self.scorer, self.image = scorer, image
        self._tokens: Any = None

    def get(self) -> Any:
        if self._tokens is None:
            assert self.scorer is not None
            self._tokens = self.scorer.vision_tokens(self.scorer.preprocess([self.image]))
        return self._tokens


class Itm:
    """ITM match probabilities, shared K/V (``shared_kv``) or the naive forward repeating the image."""

    def __init__(self, scorer: ItmScorer | None, embedder: Embedder | None, shared_kv: bool = True) -> None:
        self.scorer, self.embedder, self.shared_kv = scorer, embedder, shared_kv

    def missing(self, why: str) -> NoItmModelError:
        family = self.embedder.family if self.embedder is not None else "?"
        model = self.embedder.model_id if self.embedder is not None else "?"
        return NoItmModelError(
            f"{why}, but the {family} model {model!r} has no ITM head: set "
            "itm_model in the policy to a BLIP or BLIP-2 ITM checkpoint."
        )

    def probs(self, tokens: Any, texts: list[str], why: str = "the consistency check needs ITM") -> np.ndarray:
        if self.scorer is None:
            raise self.missing(why)
        if isinstance(tokens, LazyTokens):
            tokens = tokens.get()
        if self.shared_kv:
            logits = self.scorer.score_image_vs_texts(tokens, texts)
        else:  # the naive forward: the image repeated once per text
            logits = self.scorer.score_pairs(tokens.expand(len(texts), *tokens.shape[1:]), texts)
        return softmax_match(logits)


def screen_score(cosine: float | np.ndarray) -> Any:
    """The ITC pre-screen score: the cosine rescaled from [-1, 1] to [0, 1]."""
    return (1.0 + np.asarray(cosine, np.float64)) / 2.0


def ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 3)
