"""CLIP (``CLIPModel``, e.g. openai/clip-vit-base-patch16): projected pooled outputs of the
ViT (class token after the final layer norm) and of the text transformer (end-of-text token)."""

from __future__ import annotations

from typing import Any

import torch

from models.dual_encoder import DualEncoderEmbedder


class ClipEmbedder(DualEncoderEmbedder):
    family = "clip"
    model_class = "CLIPModel"
    what = "CLIP"
    text_padding = "longest"

    def _fingerprint_tensors(self, model: Any) -> list[torch.Tensor]:
        return [model.visual_projection.weight, model.text_projection.weight]
