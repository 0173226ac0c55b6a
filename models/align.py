"""ALIGN (``AlignModel``, kakaobrain/align-base): the EfficientNet image tower's average-pooled
output and the BERT text tower's projected [CLS]. Text is padded to 64 tokens, as
``AlignProcessor`` does by default."""

from __future__ import annotations

from typing import Any

import torch

from models.dual_encoder import DualEncoderEmbedder


class AlignEmbedder(DualEncoderEmbedder):
    family = "align"
    model_class = "AlignModel"
    what = "ALIGN"
    text_padding = "max_length"
    text_max_length = 64

    def _fingerprint_tensors(self, model: Any) -> list[torch.Tensor]:
        return [model.text_projection.weight, model.vision_model.embeddings.convolution.weight]
