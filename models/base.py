"""The embedder interface every search/index component talks to (no torch types leak out)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from blipsearch.limits import BATCH_SIZE

if TYPE_CHECKING:
    from PIL import Image


class ImagePreprocessor:
    """A picklable ``images -> pixel_values`` function: the checkpoint's own image processor.

    Decode workers in other processes receive this (not the model), so they preprocess
    exactly as the model expects.
    """

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = self.image_processor(list(images), return_tensors="np")
        return np.asarray(out["pixel_values"], dtype=np.float32)


class Embedder(ABC):
    """ITC embeddings: L2-normalised float32 vectors of size ``dim``.

    ``vectors_per_image`` is 1 for BLIP and 32 for BLIP-2 (one per Q-Former query token);
    an image's score against a text is the max over its vectors.
    """

    model_id: str
    fingerprint: str
    family: str
    has_itm: bool = False  # an ITM head shares this model (BLIP, BLIP-2); see models/families.py
    multilingual: bool = False  # the text tower reads languages other than English (models/families.py)
    dim: int = 256
    vectors_per_image: int = 1
    batch_size: int = BATCH_SIZE
    device: str = "cpu"
    text_preprocess: str = "none"  # "blip": texts go through BLIP's pre_caption before tokenizing
    precision: str = "exact"  # "exact" or "fast" (models/precision.py)

    def stage_dtypes(self) -> dict[str, str]:
        """What each model stage computes in: {"image": "bf16", "text": "fp32", ...}."""
        return {"image": "fp32", "text": "fp32", "itm": "fp32"}

    def stage_runtimes(self) -> dict[str, str]:
        """What runs each model stage: "torch", or "openvino" (models/fast_runtime.py)."""
        return {"image": "torch", "text": "torch", "itm": "torch"}

    @property
    def input_size(self) -> int | None:
        """The vision encoder's input side in pixels, when known (JPEG draft decoding uses it)."""
        return None

    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Resize and normalise exactly as the checkpoint's image processor: [n, 3, H, W] float32."""

    def preprocessor(self) -> Callable[[Sequence[Image.Image]], np.ndarray]:
        """``preprocess`` as a picklable function (for decode worker processes)."""
        return self.preprocess

    @abstractmethod
    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        """[n, 3, H, W] -> [n, dim] (BLIP) or [n, vectors_per_image, dim] (BLIP-2), float32."""

    def vision_tokens(self, pixel_values: np.ndarray) -> Any:
        """The vision encoder's full token output [n, tokens, width] (a torch tensor)."""
        raise NotImplementedError

    def embed_tokens(self, tokens: Any) -> np.ndarray:
        """Embeddings from ``vision_tokens`` output (so ITM and ITC share one ViT forward)."""
        raise NotImplementedError

    def embed_pixels_with_tokens(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings plus the vision encoder's full tokens (fp16), for the ITM feature cache."""
        raise NotImplementedError(f"{type(self).__name__} cannot return vision tokens")

    def embed_batch(self, pixel_values: np.ndarray, with_tokens: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(embeddings, fp16 vision tokens or None): one forward for both when tokens are wanted."""
        if with_tokens:
            return self.embed_pixels_with_tokens(pixel_values)
        return self.embed_pixels(pixel_values), None

    def empty_embeddings(self) -> np.ndarray:
        shape = (0, self.dim) if self.vectors_per_image == 1 else (0, self.vectors_per_image, self.dim)
        return np.zeros(shape, dtype=np.float32)

    @abstractmethod
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """[n] texts -> [n, dim] float32, L2-normalised."""

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Preprocess and embed, in batches of ``batch_size``."""
        chunks = [
            self.embed_pixels(self.preprocess(images[i : i + self.batch_size]))
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(chunks, axis=0) if chunks else self.empty_embeddings()

    def describe(self) -> dict[str, object]:
        return {
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "family": self.family,
            "dim": self.dim,
            "vectors_per_image": self.vectors_per_image,
            "has_itm": self.has_itm,
            "multilingual": self.multilingual,
            "device": self.device,
            "precision": self.precision,
            "stage_dtypes": self.stage_dtypes(),
            "stage_runtimes": self.stage_runtimes(),
        }
