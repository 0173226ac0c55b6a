"""BLIP-2 ITM: the Q-Former over [32 queries; text], queries cross-attending to the ViT output;
the logits are ``itm_head`` averaged over the 32 query positions, as transformers'
``Blip2ForImageTextRetrieval(use_image_text_matching_head=True)`` computes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from blipsearch.limits import ITM_BATCH_SIZE
from models.blip2 import Blip2Embedder
from models.itm import ItmScorer


class Blip2ItmScorer(ItmScorer):
    family = "blip2"
    embedder: Blip2Embedder

    def __init__(self, embedder: Blip2Embedder, *, batch_size: int = ITM_BATCH_SIZE) -> None:
        self.embedder = embedder
        self.model: Any = embedder.model
        self.batch_size = batch_size
        self._use_fast_attention(self.model.qformer)

    def vision_tokens(self, pixel_values: np.ndarray) -> torch.Tensor:
        return self.embedder.vision_tokens(pixel_values, stage="itm")

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.embedder.tokenize(texts)
        return enc["input_ids"], enc["attention_mask"]

    def _logits(self, image_tokens: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = self.model
        n = input_ids.shape[0]
        queries = m.query_tokens.expand(n, -1, -1)
        nq = queries.shape[1]
        embeds = m.embeddings(input_ids=input_ids, query_embeds=queries)
        attn = torch.cat([torch.ones(n, nq, dtype=mask.dtype, device=mask.device), mask], dim=1)
        out = m.qformer(
            query_embeds=embeds,
            query_length=nq,
            attention_mask=attn,
            encoder_hidden_states=image_tokens.to(m.device, m.qformer.layernorm.weight.dtype),
        ).last_hidden_state
        return m.itm_head(out[:, :nq, :].to(m.itm_head.weight.dtype)).mean(dim=1)
