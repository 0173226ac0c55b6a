"""Caption generation: ``BlipForConditionalGeneration`` (default
``Salesforce/blip-image-captioning-base``) or ``Blip2ForConditionalGeneration`` (OPT / Flan-T5).

Captions equal ``model.generate`` called directly with the same processor inputs and
decoding settings (tests/test_captions.py); batching pads nothing image-side, and a shared
text prompt gives every image the same prefix, so batched and one-by-one results agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from blipsearch.errors import ModelLoadError
from models.base import ImagePreprocessor
from models.loading import from_pretrained, resolve_source
from models.precision import plan_precision
from models.runtime import input_side, pick_device, pick_dtype

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 30
    num_beams: int = 1  # 1 = greedy
    prompt: str | None = None  # e.g. "a photography of"
    min_new_tokens: int | None = None  # benchmarks fix the length so every run does the same work

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "do_sample": False}
        if self.min_new_tokens is not None:
            kw["min_new_tokens"] = self.min_new_tokens
        return kw


class Captioner:
    def __init__(
        self, source: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 16, precision: str = "exact"
    ) -> None:
        from transformers import AutoConfig, AutoProcessor, Blip2ForConditionalGeneration, BlipForConditionalGeneration

        from models.registry import _quiet_transformers

        _quiet_transformers()
        config = from_pretrained(AutoConfig, source, "caption model config")
        classes = {"blip": BlipForConditionalGeneration, "blip-2": Blip2ForConditionalGeneration}
        cls = classes.get(getattr(config, "model_type", ""))
        if cls is None:
            raise ModelLoadError(
                f"{source!r} is not a BLIP or BLIP-2 captioning checkpoint (model_type {config.model_type!r}); "
                f"use e.g. {DEFAULT_CAPTION_MODEL} or Salesforce/blip2-opt-2.7b."
            )
        dev = pick_device(device)
        self.plan = plan_precision(precision, dev, None if dtype == "auto" else pick_dtype(dtype, dev))
        self.torch_dtype = self.plan.weights
        self.precision = precision
        self.model: Any = from_pretrained(cls, source, "caption model", dtype=self.torch_dtype).to(dev).eval()
        self.processor: Any = from_pretrained(AutoProcessor, source, "caption processor")
        self.model_id = resolve_source(source)
        self.family = "blip2" if cls is Blip2ForConditionalGeneration else "blip"
        self.batch_size = batch_size

    @property
    def input_size(self) -> int | None:
        return input_side(self.processor)

    def preprocessor(self) -> ImagePreprocessor:
        return ImagePreprocessor(self.processor.image_processor)

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.preprocessor()(images)

    def caption_pixels(self, pixel_values: np.ndarray, decoding: Decoding = Decoding()) -> list[str]:
        n = len(pixel_values)
        pixels = torch.as_tensor(pixel_values).to(self.model.device, self.torch_dtype)
        inputs: dict[str, Any] = {"pixel_values": pixels}
        if decoding.prompt:
            enc = self.processor.tokenizer([decoding.prompt] * n, return_tensors="pt")
            ids, mask = enc["input_ids"], enc["attention_mask"]
            image_token = getattr(self.model.config, "image_token_index", None)
            if self.family == "blip2" and image_token is not None:
                # As Blip2Processor does: the query-token placeholders precede the prompt.
                nq = self.model.config.num_query_tokens
                ids = torch.cat([torch.full((n, nq), image_token, dtype=ids.dtype), ids], dim=1)
                mask = torch.cat([torch.ones((n, nq), dtype=mask.dtype), mask], dim=1)
            inputs["input_ids"] = ids.to(self.model.device)
            inputs["attention_mask"] = mask.to(self.model.device)
        with torch.inference_mode(), self.plan.run("caption"):
            out = self.model.generate(**inputs, **decoding.generate_kwargs())
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [t.strip() for t in texts]

    def caption(self, images: Sequence[Image.Image], decoding: Decoding = Decoding()) -> list[str]:
        out: list[str] = []
        for i in range(0, len(images), self.batch_size):
            out += self.caption_pixels(self.preprocess(images[i : i + self.batch_size]), decoding)
        return out
