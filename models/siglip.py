"""SigLIP (``SiglipModel``, e.g. google/siglip-base-patch16-224; SigLIP 2 fixed-resolution
checkpoints load the same way): the vision tower's attention-pooling head and the text tower's
last-token head. Text is padded to ``max_length``, as SigLIP was trained and its documentation
requires (the text pooled output is the last position's)."""

from __future__ import annotations

from typing import Any

import torch

from models.dual_encoder import DualEncoderEmbedder


class SiglipEmbedder(DualEncoderEmbedder):
    family = "siglip"
    model_class = "SiglipModel"
    what = "SigLIP"
    text_padding = "max_length"

    def _fingerprint_tensors(self, model: Any) -> list[torch.Tensor]:
        return [model.vision_model.head.mlp.fc2.weight, model.text_model.head.weight]
