"""What BLIP and BLIP-2 embedders share: device/precision set-up, preprocessing, the vision
encoder call, tokenization and batched text embedding. Subclasses load their checkpoint and
say how vision tokens and text hidden states become ITC vectors."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from models.base import Embedder, ImagePreprocessor
from models.loading import resolve_source
from models.precision import DEFAULT_FAST_STAGES, PrecisionPlan, plan_precision
from models.runtime import input_side, pick_device, pick_dtype
from models.text_preprocess import DEFAULT_MAX_WORDS, TextPreprocessor

if TYPE_CHECKING:
    from PIL import Image


class TorchEmbedder(Embedder):
    model: Any
    processor: Any
    torch_dtype: torch.dtype
    max_text_tokens: int
    plan: PrecisionPlan
    fast_stages: frozenset[str] = DEFAULT_FAST_STAGES  # stages that held the fidelity bound for this family

    def _setup(
        self,
        source: str,
        device: str,
        dtype: str,
        batch_size: int,
        precision: str = "exact",
        *,
        text_preprocess: str = "blip",
        text_max_words: int | None = DEFAULT_MAX_WORDS,
        model_id: str | None = None,  # already resolved by a loader with its own layout (OpenCLIP)
    ) -> torch.device:
        self.model_id = model_id or resolve_source(source)  # local directories are recorded as absolute paths
        self.batch_size = batch_size
        # BLIP-family models see texts as their training did: BLIP's pre_caption (models/text_preprocess.py).
        self.prepare_text = TextPreprocessor(text_preprocess, text_max_words)
        self.text_preprocess = text_preprocess
        dev = pick_device(device)
        weights = None if dtype == "auto" else pick_dtype(dtype, dev)
        self.plan = plan_precision(precision, dev, weights, fast_stages=self.fast_stages)
        self.torch_dtype = self.plan.weights
        self.precision = precision
        self.device = str(dev)
        return dev

    @property
    def input_size(self) -> int | None:
        return input_side(self.processor)

    def stage_dtypes(self) -> dict[str, str]:
        return {k: v for k, v in self.plan.describe().items() if k not in ("mode", "caption")}

    def _text_limit(self, max_positions: int) -> int:
        return int(min(self.processor.tokenizer.model_max_length, max_positions))

    # -- images -------------------------------------------------------------------------
    def preprocessor(self) -> ImagePreprocessor:
        return ImagePreprocessor(self.processor.image_processor)

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.preprocessor()(images)

    def vision_tokens(self, pixel_values: np.ndarray | torch.Tensor, stage: str = "image") -> torch.Tensor:
        """The vision encoder's full token output [n, tokens, width] (what ITM attends to).

        ``stage``: whose precision the forward runs in ("image", or "itm" for re-ranking).
        """
        pixels = torch.as_tensor(pixel_values)
        if self.model.device.type == "cuda" and not pixels.is_cuda:
            pixels = pixels.pin_memory()  # page-locked, so the copy below is asynchronous
        pixels = pixels.to(self.model.device, self.torch_dtype, non_blocking=True)
        with torch.inference_mode(), self.plan.run(stage):
            return self.model.vision_model(pixel_values=pixels).last_hidden_state

    @abstractmethod
    def embed_tokens(self, tokens: torch.Tensor) -> np.ndarray: ...

    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.embed_tokens(self.vision_tokens(pixel_values))

    def embed_pixels_with_tokens(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.vision_tokens(pixel_values)
        return self.embed_tokens(tokens), tokens.to(torch.float16).cpu().numpy()

    # -- texts --------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pre-process (``text_preprocess``) and tokenize: the one path for ITC and ITM texts."""
        enc = self.processor.tokenizer(
            [self.prepare_text(t) for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        dev = self.model.device
        return {"input_ids": enc["input_ids"].to(dev), "attention_mask": enc["attention_mask"].to(dev)}

    @abstractmethod
    def _text_features(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        """[n, dim] L2-normalised float32 text features (inside inference mode)."""

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), self.batch_size):
            with torch.inference_mode(), self.plan.run("text"):
                out.append(self._text_features(self.tokenize(texts[i : i + self.batch_size])).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
