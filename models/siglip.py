"""SigLIP (``SiglipModel``, e.g. google/siglip-base-patch16-224; SigLIP 2 fixed-resolution
checkpoints load the same way): the vision tower's attention-pooling head and the text tower's
last-token head. Text is padded to ``max_length``, as SigLIP was trained and its documentation
requires (the text pooled output is the last position's)."""

from __future__ import annotations

from typing import Any

import torch

from blipsearch.errors import ModelLoadError
from blipsearch.limits import BATCH_SIZE
from models.dual_encoder import DualEncoderEmbedder


class SiglipEmbedder(DualEncoderEmbedder):
    family = "siglip"
    model_class = "SiglipModel"
    what = "SigLIP"
    text_padding = "max_length"

    def __init__(self, source: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = BATCH_SIZE) -> None:
        import importlib.util

        try:
            super().__init__(source, device=device, dtype=dtype, batch_size=batch_size)
        except ModelLoadError as exc:
            if importlib.util.find_spec("sentencepiece") is None:  # SiglipTokenizer is a SentencePiece model
                hint = "SigLIP's tokenizer needs sentencepiece: pip install 'blipsearch[siglip]'."
                raise ModelLoadError(f"{exc} {hint}") from exc
            raise

    def _fingerprint_tensors(self, model: Any) -> list[torch.Tensor]:
        return [model.vision_model.head.mlp.fc2.weight, model.text_model.head.weight]
