"""Image-text matching (ITM) scorers: the interface the re-rankers use.

``image_tokens`` are the vision encoder's full token output for one or more images (what the
ITM head cross-attends to); callers may compute them (``vision_tokens``) or load them from a
feature cache.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from blipsearch.limits import ITM_BATCH_SIZE
from models.base import Embedder

if TYPE_CHECKING:
    from PIL import Image


class ItmScorer(ABC):
    family: str
    batch_size: int = ITM_BATCH_SIZE
    embedder: Any  # the loaded BLIP / BLIP-2 TorchEmbedder whose vision encoder, processor and precision plan ITM uses

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Pixels as THIS model's vision encoder expects them (its own processor and input size)."""
        return self.embedder.preprocess(images)

    def shares_vision_with(self, embedder: Embedder) -> bool:
        """Whether ``embedder``'s vision tokens are this scorer's (same checkpoint): then the
        collection's ITM feature cache and one shared ViT forward can be used."""
        return embedder is self.embedder or embedder.fingerprint == self.embedder.fingerprint

    def _token_dtype(self) -> torch.dtype:
        """The dtype image tokens are fed in: the ``itm`` stage's compute dtype (bf16 under fast
        autocast, so the fp16 cache converts once, not once per layer; fp32 in ``exact``)."""
        plan = getattr(self.embedder, "plan", None)
        return plan.stage_dtype("itm") if plan is not None else self.embedder.torch_dtype

    def _use_fast_attention(self, model: Any) -> None:
        """In ``fast`` mode, patch ``model``'s cross-attention with the factored form
        (models/fast_itm.py: same function, ~head_dim / text length fewer FLOPs per image)."""
        plan = getattr(self.embedder, "plan", None)
        if plan is not None and plan.mode == "fast":
            from models.fast_itm import factor_cross_attention

            factor_cross_attention(model)

    def _itm_precision(self) -> contextlib.AbstractContextManager[None]:
        """The ``itm`` stage's precision (autocast in ``fast`` mode where it holds the bound)."""
        plan = getattr(self.embedder, "plan", None)
        return plan.run("itm") if plan is not None else contextlib.nullcontext()

    @abstractmethod
    def vision_tokens(self, pixel_values: np.ndarray) -> torch.Tensor:
        """[n, 3, H, W] pixels -> [n, tokens, width] vision encoder output."""

    @abstractmethod
    def _logits(self, image_tokens: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[n, 2] ITM logits; image_tokens has batch n, or 1 to share one image across n texts."""

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids and attention_mask for the ITM text encoder, on the model's device."""

    def score_text_vs_images(self, text: str, image_tokens: torch.Tensor) -> np.ndarray:
        """One text against k images: [k, 2] logits (no-match, match)."""
        ids, mask = self.tokenize([text])
        out = []
        for i in range(0, image_tokens.shape[0], self.batch_size):
            chunk = image_tokens[i : i + self.batch_size]
            n = chunk.shape[0]
            with torch.inference_mode(), self._itm_precision():
                out.append(self._logits(chunk, ids.expand(n, -1), mask.expand(n, -1)).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)

    def score_image_vs_texts(self, image_tokens: torch.Tensor, texts: Sequence[str]) -> np.ndarray:
        """One image against T texts: [T, 2] logits.

        The image is passed once (batch 1) and broadcast against the T texts inside attention,
        so each layer projects the image's cross-attention keys and values once, not T times
        as a naive forward over T (image, text) pairs does.
        """
        if image_tokens.dim() == 2:
            image_tokens = image_tokens[None]
        out = []
        for i in range(0, len(texts), self.batch_size):
            ids, mask = self.tokenize(texts[i : i + self.batch_size])
            with torch.inference_mode(), self._itm_precision():
                out.append(self._logits(image_tokens[:1], ids, mask).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)

    def score_pairs(self, image_tokens: torch.Tensor, texts: Sequence[str]) -> np.ndarray:
        """n (image, text) pairs: [n, 2] logits; no sharing (the naive forward, as transformers)."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            ids, mask = self.tokenize(texts[i : i + self.batch_size])
            chunk = image_tokens[i : i + self.batch_size]
            with torch.inference_mode(), self._itm_precision():
                out.append(self._logits(chunk.contiguous(), ids, mask).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)


def softmax_match(logits: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """P(match) from [n, 2] ITM logits (the softmax's match class), as ``dtype``."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e[:, 1] / e.sum(axis=1)).astype(dtype)
