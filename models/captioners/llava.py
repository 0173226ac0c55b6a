"""LLaVA (``LlavaForConditionalGeneration``, e.g. llava-hf/llava-1.5-7b-hf): the prompt goes
through the processor's own chat template, one user turn holding the image and the prompt, with
``add_generation_prompt=True``; the ``<image>`` placeholder is expanded to the vision tower's
token count exactly as the processor does for these pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from models.captioners.base import Captioner


class LlavaCaptioner(Captioner):
    family = "llava"
    model_types = ("llava",)
    architecture = "LlavaForConditionalGeneration"
    supports_vqa = True
    default_prompt = "Describe the image in one sentence."

    def chat_text(self, prompt: str) -> str:
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return str(self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False))

    def text_inputs(self, pixel_values: np.ndarray, prompt: str | None) -> dict[str, torch.Tensor]:
        template = self.chat_text(prompt or "")
        token = self.processor.image_token
        texts = [
            template.replace(token, self.processor.replace_image_token({"pixel_values": pixel_values}, i), 1)
            for i in range(len(pixel_values))
        ]
        enc = self.processor.tokenizer(texts, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
