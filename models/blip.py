"""BLIP ITC embeddings from ``BlipForImageTextRetrieval`` (e.g. Salesforce/blip-itm-base-coco).

Image: ``normalize(vision_proj(vision_model(pixels).last_hidden_state[:, 0]))``.
Text:  ``normalize(text_proj(text_encoder(ids, mask).last_hidden_state[:, 0]))`` in text-only
mode (no cross-attention). This is exactly the ``use_itm_head=False`` path of transformers, so
``image_emb @ text_emb`` equals its ``itm_score``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from blipsearch.limits import BATCH_SIZE
from models.fast_runtime import OpenVinoStages
from models.fast_vision import use_sdpa
from models.loading import from_pretrained
from models.runtime import fingerprint
from models.text_preprocess import DEFAULT_MAX_WORDS
from models.torch_embedder import TorchEmbedder


class BlipEmbedder(OpenVinoStages, TorchEmbedder):
    family = "blip"
    has_itm = True
    vectors_per_image = 1

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
        fast_runtime: str = "auto",
        runtime_cache_dir: str | Path | None = None,
    ) -> None:
        from transformers import BlipForImageTextRetrieval, BlipProcessor

        dev = self._setup(
            source, device, dtype, batch_size, precision, text_preprocess=text_preprocess, text_max_words=text_max_words
        )
        model = from_pretrained(BlipForImageTextRetrieval, source, "BLIP retrieval model", dtype=torch.float32)
        self.processor: Any = from_pretrained(BlipProcessor, source, "BLIP processor")
        self.fingerprint = fingerprint(
            {"family": self.family, "dim": model.config.image_text_hidden_size},
            model.vision_proj.weight,
            model.text_proj.weight,
        )
        self.model: Any = model.to(device=dev, dtype=self.torch_dtype).eval()
        use_sdpa(self.model.vision_model)  # fused attention; same outputs as the eager path
        self.dim = int(model.config.image_text_hidden_size)
        self.max_text_tokens = self._text_limit(model.config.text_config.max_position_embeddings)
        # fast mode: image and text on OpenVINO where models/fast_runtime.py adopts it
        self._setup_fast_runtime(fast_runtime, runtime_cache_dir)

    def embed_tokens(self, tokens: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), self.plan.run("image"):
            feats = F.normalize(self.model.vision_proj(tokens[:, 0, :]).float(), dim=-1)
        return feats.cpu().numpy()

    def _text_features(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.model.text_encoder(**enc).last_hidden_state
        return F.normalize(self.model.text_proj(hidden[:, 0, :]).float(), dim=-1)
