"""SigLIP 2 NaFlex (``Siglip2Model``, e.g. google/siglip2-base-patch16-naflex): images keep their
aspect ratio, cut into at most ``max_num_patches`` patches (``Siglip2ImageProcessor``); the vision
tower attends over the real patches only and pools them with its attention head. Text goes
through the Gemma tokenizer (lower-cased, as SigLIP 2 was trained), padded to 64 tokens.

SigLIP 2 fixed-resolution checkpoints (google/siglip2-base-patch16-224) are ``SiglipModel``
checkpoints and load with models/siglip.py.

The image processor returns three arrays per batch: patches ``[n, P, 3·p·p]``, a patch mask
``[n, P]`` and the patch grid ``[n, 2]``. The indexing pipeline moves one float32 array per image,
so they travel packed as ``[P, 3·p·p + 3]``: the patch values, the mask, then the grid's height
and width on every row (small integers, exact in float32); ``embed_pixels`` unpacks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from models.base import ImagePreprocessor
from models.dual_encoder import DualEncoderEmbedder, _features

if TYPE_CHECKING:
    from PIL import Image

EXTRA_COLUMNS = 3  # mask, grid height, grid width


def pack(out: Any) -> np.ndarray:
    """The image processor's output as one ``[n, P, 3·p·p + 3]`` float32 array."""
    patches = np.asarray(out["pixel_values"], dtype=np.float32)
    mask = np.asarray(out["pixel_attention_mask"], dtype=np.float32)[..., None]
    shapes = np.asarray(out["spatial_shapes"], dtype=np.float32)[:, None, :]
    grid = np.broadcast_to(shapes, (patches.shape[0], patches.shape[1], 2))
    return np.concatenate([patches, mask, grid], axis=-1)


def unpack(packed: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pixel_values, pixel_attention_mask, spatial_shapes) from ``pack``'s array."""
    t = torch.as_tensor(packed)
    return t[..., :-EXTRA_COLUMNS], t[..., -EXTRA_COLUMNS].round().long(), t[:, 0, -2:].round().long()


class NaflexPreprocessor(ImagePreprocessor):
    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        return pack(self.image_processor(list(images), return_tensors="np"))


class Siglip2Embedder(DualEncoderEmbedder):
    family = "siglip2"
    model_class = "Siglip2Model"
    what = "SigLIP 2"
    text_padding = "max_length"
    text_max_length = 64  # Siglip2Processor's default, as the models were trained

    @property
    def input_size(self) -> int | None:
        """The largest side the patch budget allows (a square image): what JPEG draft decoding may aim at."""
        ip = self.processor.image_processor
        return int(ip.patch_size * int(ip.max_num_patches**0.5))

    def preprocessor(self) -> NaflexPreprocessor:
        return NaflexPreprocessor(self.processor.image_processor)

    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        pixels, mask, shapes = unpack(pixel_values)
        dev = self.model.device
        with torch.inference_mode():
            out = self.model.get_image_features(
                pixel_values=self._pixels(pixels), pixel_attention_mask=mask.to(dev), spatial_shapes=shapes.to(dev)
            )
            return F.normalize(_features(out).float(), dim=-1).cpu().numpy()
