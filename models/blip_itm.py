"""BLIP ITM: ``itm_head`` over the text encoder's first token, cross-attending to the image.

First token: BLIP's retrieval training and evaluation (salesforce/BLIP ``train_retrieval.py``,
LAVIS ``blip_retrieval``) put ``[ENC]`` in place of ``[CLS]`` for ITM (``text_ids[:, 0] =
enc_token_id``); ITC keeps ``[CLS]``. The hub ``blip-itm-*-coco`` checkpoints are conversions
of those trained weights and their tokenizers carry ``[ENC]``, so blipsearch uses ``[ENC]`` by
default, as the papers' protocol does. transformers' ``BlipForImageTextRetrieval`` feeds the
tokenizer's ``[CLS]`` unchanged; ``first_token="cls"`` reproduces that.

transformers' own ITM forward builds its image attention mask on the CPU
(``torch.ones(image_embeds.size()[:-1], dtype=torch.long)``, no device); here no image mask is
passed at all (every image token is valid), so the path is device-clean on CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from blipsearch.limits import ITM_BATCH_SIZE
from models.blip import BlipEmbedder
from models.itm import ItmScorer


class BlipItmScorer(ItmScorer):
    family = "blip"
    embedder: BlipEmbedder

    def __init__(self, embedder: BlipEmbedder, *, first_token: str = "enc", batch_size: int = ITM_BATCH_SIZE) -> None:
        self.embedder = embedder
        self.model: Any = embedder.model
        self.batch_size = batch_size
        tok = embedder.processor.tokenizer
        enc_id = tok.convert_tokens_to_ids("[ENC]")
        self.first_token_id: int | None = None
        if first_token == "enc" and enc_id is not None and enc_id != tok.unk_token_id:
            self.first_token_id = int(enc_id)
        self.first_token = "enc" if self.first_token_id is not None else "cls"
        self._use_fast_attention(self.model.text_encoder)

    def vision_tokens(self, pixel_values: np.ndarray) -> torch.Tensor:
        return self.embedder.vision_tokens(pixel_values, stage="itm")

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.embedder.tokenize(texts)
        ids = enc["input_ids"].clone()
        if self.first_token_id is not None:
            ids[:, 0] = self.first_token_id
        return ids, enc["attention_mask"]

    def _logits(self, image_tokens: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        image_tokens = image_tokens.to(self.model.device, self._token_dtype())
        hidden = self.model.text_encoder(
            input_ids=input_ids, attention_mask=mask, encoder_hidden_states=image_tokens
        ).last_hidden_state
        return self.model.itm_head(hidden[:, 0, :])
