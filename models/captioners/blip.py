"""BLIP (``BlipForConditionalGeneration``, e.g. Salesforce/blip-image-captioning-base) and BLIP-2
(``Blip2ForConditionalGeneration``, OPT or Flan-T5) captioners.

A prompt is a prefix the caption continues (``"a photography of"``), and the caption includes
it, as ``processor.decode(model.generate(...))`` gives it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.captioners.base import Captioner


class BlipCaptioner(Captioner):
    family = "blip"
    model_types = ("blip",)
    architecture = "BlipForConditionalGeneration"

    def text_inputs(self, pixel_values: np.ndarray, prompt: str | None) -> dict[str, torch.Tensor]:
        if not prompt:
            return {}
        enc = self.processor.tokenizer([prompt] * len(pixel_values), return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def new_tokens(self, out: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        return out  # the caption continues the prompt and includes it


class Blip2Captioner(BlipCaptioner):
    family = "blip2"
    model_types = ("blip-2",)
    architecture = "Blip2ForConditionalGeneration"

    def text_inputs(self, pixel_values: np.ndarray, prompt: str | None) -> dict[str, torch.Tensor]:
        enc = super().text_inputs(pixel_values, prompt)
        image_token = getattr(self.model.config, "image_token_index", None)
        if enc and image_token is not None:
            # As Blip2Processor does: the query-token placeholders precede the prompt.
            ids, mask = enc["input_ids"], enc["attention_mask"]
            n, nq = len(ids), self.model.config.num_query_tokens
            enc["input_ids"] = torch.cat([torch.full((n, nq), image_token, dtype=ids.dtype), ids], dim=1)
            enc["attention_mask"] = torch.cat([torch.ones((n, nq), dtype=mask.dtype), mask], dim=1)
        return enc
