"""BLIP-2 ITC embeddings from ``Blip2ForImageTextRetrieval`` (e.g. Salesforce/blip2-itm-vit-g).

Image: the Q-Former's 32 query outputs over the frozen ViT, each projected by
``vision_projection`` and L2-normalised: [n, 32, 256].
Text: the Q-Former in text-only mode, ``text_projection`` of the CLS token: [n, 256].
The image-text score is the max over the 32 query vectors, exactly as transformers'
``use_image_text_matching_head=False`` path computes ``logits_per_image``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from models.base import Embedder
from models.loading import from_pretrained
from models.runtime import fingerprint, pick_device, pick_dtype

if TYPE_CHECKING:
    from PIL import Image


class Blip2Embedder(Embedder):
    family = "blip2"

    def __init__(self, source: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 32) -> None:
        from transformers import Blip2ForImageTextRetrieval, Blip2Processor

        self.model_id = source
        self.batch_size = batch_size
        dev = pick_device(device)
        self.torch_dtype = pick_dtype(dtype, dev)
        self.device = str(dev)
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
        self.max_text_tokens = int(
            min(self.processor.tokenizer.model_max_length, model.config.qformer_config.max_position_embeddings)
        )

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = self.processor.image_processor(list(images), return_tensors="np")
        return np.asarray(out["pixel_values"], dtype=np.float32)

    def vision_tokens(self, pixel_values: np.ndarray | torch.Tensor) -> torch.Tensor:
        pixels = torch.as_tensor(pixel_values).to(self.model.device, self.torch_dtype, non_blocking=True)
        with torch.inference_mode():
            return self.model.vision_model(pixel_values=pixels).last_hidden_state

    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.embed_tokens(self.vision_tokens(pixel_values))

    def embed_pixels_with_tokens(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.vision_tokens(pixel_values)
        return self.embed_tokens(tokens), tokens.to(torch.float16).cpu().numpy()

    def embed_tokens(self, tokens: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            image_embeds = tokens.float()
            mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
            queries = self.model.query_tokens.expand(image_embeds.shape[0], -1, -1)
            out = self.model.qformer(
                query_embeds=queries, encoder_hidden_states=image_embeds, encoder_attention_mask=mask
            ).last_hidden_state
            feats = F.normalize(self.model.vision_projection(out.float()).float(), dim=-1)
        return feats.cpu().numpy()

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
                embeds = self.model.embeddings(input_ids=enc["input_ids"])
                hidden = self.model.qformer(
                    query_embeds=embeds, query_length=0, attention_mask=enc["attention_mask"]
                ).last_hidden_state
                out.append(F.normalize(self.model.text_projection(hidden[:, 0, :]).float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
