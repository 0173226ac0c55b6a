"""BLIP ITC embeddings from ``BlipForImageTextRetrieval`` (e.g. Salesforce/blip-itm-base-coco).

Image: ``normalize(vision_proj(vision_model(pixels).last_hidden_state[:, 0]))``.
Text:  ``normalize(text_proj(text_encoder(ids, mask).last_hidden_state[:, 0]))`` in text-only
mode (no cross-attention). This is exactly the ``use_itm_head=False`` path of transformers, so
``image_emb @ text_emb`` equals its ``itm_score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from models.base import Embedder
from models.fast_vision import use_sdpa
from models.loading import from_pretrained
from models.runtime import fingerprint, pick_device, pick_dtype

if TYPE_CHECKING:
    from PIL import Image


class BlipEmbedder(Embedder):
    family = "blip"
    vectors_per_image = 1

    def __init__(self, source: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 32) -> None:
        from transformers import BlipForImageTextRetrieval, BlipProcessor

        self.model_id = source
        self.batch_size = batch_size
        dev = pick_device(device)
        self.torch_dtype = pick_dtype(dtype, dev)
        self.device = str(dev)
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
        self.max_text_tokens = int(
            min(self.processor.tokenizer.model_max_length, model.config.text_config.max_position_embeddings)
        )

    # -- images -------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = self.processor.image_processor(list(images), return_tensors="np")
        return np.asarray(out["pixel_values"], dtype=np.float32)

    def vision_tokens(self, pixel_values: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The vision encoder's full token output [n, 1 + patches, hidden] (what ITM attends to)."""
        pixels = torch.as_tensor(pixel_values).to(self.model.device, self.torch_dtype, non_blocking=True)
        with torch.inference_mode():
            return self.model.vision_model(pixel_values=pixels).last_hidden_state

    def embed_tokens(self, tokens: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            feats = F.normalize(self.model.vision_proj(tokens[:, 0, :]).float(), dim=-1)
        return feats.cpu().numpy()

    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.embed_tokens(self.vision_tokens(pixel_values))

    def embed_pixels_with_tokens(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.vision_tokens(pixel_values)
        return self.embed_tokens(tokens), tokens.to(torch.float16).cpu().numpy()

    # -- texts --------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.processor.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        )
        return {
            "input_ids": enc["input_ids"].to(self.model.device),
            "attention_mask": enc["attention_mask"].to(self.model.device),
        }

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenize(texts[i : i + self.batch_size])
            with torch.inference_mode():
                hidden = self.model.text_encoder(**enc).last_hidden_state
                out.append(F.normalize(self.model.text_proj(hidden[:, 0, :]).float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
