"""Dual-encoder families (CLIP, SigLIP, ALIGN, SigLIP 2, MetaCLIP 2, AltCLIP, Chinese-CLIP, OpenCLIP):
an image tower and a text tower with no cross-attention and no ITM head.

Vectors are ``get_image_features`` / ``get_text_features`` (their ``pooler_output``), L2-normalised,
with the checkpoint's own processor; scores are cosines. Texts reach the checkpoint's tokenizer
exactly as given (BLIP's ``pre_caption`` is for the BLIP families only), so queries in any script
are tokenized as the model was trained. Subclasses name the transformers
class and how text is padded. ITM re-ranking on these collections uses a BLIP / BLIP-2 ITM
model loaded from its own checkpoint (``--rerank-model``, rerank/service.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from blipsearch.errors import NoItmModelError
from blipsearch.limits import BATCH_SIZE
from models.families import MODEL_FAMILIES
from models.loading import from_pretrained
from models.runtime import fingerprint
from models.torch_embedder import TorchEmbedder


def _features(out: Any) -> torch.Tensor:
    """transformers >= 5 returns a model output whose ``pooler_output`` is the feature; older
    versions return the tensor itself."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class DualEncoderEmbedder(TorchEmbedder):
    model_class: ClassVar[str]  # transformers class name
    what: ClassVar[str]  # for error messages
    # tokenizer padding: "longest" (CLIP) or "max_length" (SigLIP, ALIGN's processor default)
    text_padding: ClassVar[str] = "longest"
    text_max_length: ClassVar[int | None] = None  # a fixed padded length (ALIGN: 64)

    def __init__(self, source: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = BATCH_SIZE) -> None:
        import transformers
        from transformers import AutoProcessor

        dev = self._setup(source, device, dtype, batch_size, text_preprocess="none")  # own processors only
        cls = getattr(transformers, self.model_class)
        model = from_pretrained(cls, source, f"{self.what} model", dtype=torch.float32)
        self.processor: Any = from_pretrained(AutoProcessor, source, f"{self.what} processor")
        self.model: Any = model.to(device=dev, dtype=self.torch_dtype).eval()
        self.multilingual = MODEL_FAMILIES[self.family].is_multilingual(model.config)
        self.max_text_tokens = self._text_limit(self._max_positions(model.config))
        if self.text_max_length is not None:
            self.max_text_tokens = min(self.max_text_tokens, self.text_max_length)
        # The dimension is what the towers produce (a tiny forward, so no config convention is assumed).
        self.dim = int(self.embed_texts(["a"]).shape[1])
        self.fingerprint = fingerprint(
            {"family": self.family, "dim": self.dim, "model_type": model.config.model_type},
            *self._fingerprint_tensors(model),
        )

    @staticmethod
    def _max_positions(config: Any) -> int:
        return int(config.text_config.max_position_embeddings)

    def _fingerprint_tensors(self, model: Any) -> list[torch.Tensor]:
        """Weights that differ between any two checkpoints of the family (the last layers of both towers)."""
        params = [p for _, p in model.named_parameters()]
        return [params[0], params[-1]]

    # -- images -------------------------------------------------------------------------
    def _pixels(self, pixel_values: np.ndarray | torch.Tensor) -> torch.Tensor:
        pixels = torch.as_tensor(pixel_values)
        if self.model.device.type == "cuda" and not pixels.is_cuda:
            pixels = pixels.pin_memory()
        return pixels.to(self.model.device, self.torch_dtype, non_blocking=True)

    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            feats = _features(self.model.get_image_features(pixel_values=self._pixels(pixel_values)))
            return F.normalize(feats.float(), dim=-1).cpu().numpy()

    def _no_itm(self) -> NoItmModelError:
        return NoItmModelError(
            f"{self.what} ({self.model_id}) has no image-text matching (ITM) head: name a BLIP or BLIP-2 "
            "ITM checkpoint to re-rank or confirm with (search --rerank-model, API rerank_model, policy itm_model)."
        )

    def vision_tokens(self, pixel_values: np.ndarray | torch.Tensor, stage: str = "image") -> torch.Tensor:
        raise self._no_itm()

    def embed_tokens(self, tokens: torch.Tensor) -> np.ndarray:
        raise self._no_itm()

    def embed_pixels_with_tokens(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise self._no_itm()

    # -- texts --------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        padding: bool | str = True if self.text_padding == "longest" else "max_length"
        enc = self.processor.tokenizer(
            list(texts), padding=padding, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        )
        dev = self.model.device
        return {k: v.to(dev) for k, v in enc.items()}

    def _text_features(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(_features(self.model.get_text_features(**enc)).float(), dim=-1)
