"""BLIP-2 ITC embeddings from ``Blip2ForImageTextRetrieval`` (e.g. Salesforce/blip2-itm-vit-g).

Image: the Q-Former's 32 query outputs over the frozen ViT, each projected by
``vision_projection`` and L2-normalised: [n, 32, 256].
Text: the Q-Former in text-only mode, ``text_projection`` of the CLS token: [n, 256].
The image-text score is the max over the 32 query vectors, exactly as transformers'
``use_image_text_matching_head=False`` path computes ``logits_per_image``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from blipsearch.limits import BATCH_SIZE
from models.loading import from_pretrained
from models.precision import BLIP2_FAST_STAGES
from models.runtime import fingerprint
from models.text_preprocess import DEFAULT_MAX_WORDS
from models.torch_embedder import TorchEmbedder


class Blip2Embedder(TorchEmbedder):
    family = "blip2"
    has_itm = True
    fast_stages = BLIP2_FAST_STAGES

    def __init__(
        self,
        source: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = BATCH_SIZE,
        text_preprocess: str = "blip",
        text_max_words: int | None = DEFAULT_MAX_WORDS,
        precision: str = "exact",
    ) -> None:
        from transformers import Blip2ForImageTextRetrieval, Blip2Processor

        dev = self._setup(
            source, device, dtype, batch_size, precision, text_preprocess=text_preprocess, text_max_words=text_max_words
        )
        model = from_pretrained(Blip2ForImageTextRetrieval, source, "BLIP-2 retrieval model", dtype=torch.float32)
        self.processor: Any = from_pretrained(Blip2Processor, source, "BLIP-2 processor")
        self.fingerprint = fingerprint(
            {"family": self.family, "dim": model.config.image_text_hidden_size},
            model.vision_projection.weight,
            model.text_projection.weight,
        )
        # transformers keeps the Q-Former and query tokens in fp32 (_keep_in_fp32_modules);
        # only the ViT runs in reduced precision.
        model = model.to(dev).eval()
        model.vision_model.to(self.torch_dtype)
        self.model: Any = model
        self.dim = int(model.config.image_text_hidden_size)
        self.vectors_per_image = int(model.config.num_query_tokens)
        self.max_text_tokens = self._text_limit(model.config.qformer_config.max_position_embeddings)

    def embed_tokens(self, tokens: torch.Tensor) -> np.ndarray:
        # The Q-Former runs fp32 in every mode, as transformers keeps it (_keep_in_fp32_modules):
        # in ``fast`` only the ViT (about 95 % of ViT-g's FLOPs) runs bf16. A bf16 Q-Former missed
        # the cosine bound on the tiny model (BENCHMARKS.md, fast_blip2).
        with torch.inference_mode():
            image_embeds = tokens.float()
            mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
            queries = self.model.query_tokens.expand(image_embeds.shape[0], -1, -1)
            out = self.model.qformer(
                query_embeds=queries, encoder_hidden_states=image_embeds, encoder_attention_mask=mask
            ).last_hidden_state
            feats = F.normalize(self.model.vision_projection(out.float()).float(), dim=-1)
        return feats.cpu().numpy()

    def _text_features(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        embeds = self.model.embeddings(input_ids=enc["input_ids"])
        hidden = self.model.qformer(
            query_embeds=embeds, query_length=0, attention_mask=enc["attention_mask"]
        ).last_hidden_state
        return F.normalize(self.model.text_projection(hidden[:, 0, :]).float(), dim=-1)
