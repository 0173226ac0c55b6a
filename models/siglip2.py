"""SigLIP 2 NaFlex (``Siglip2Model``, e.g. google/siglip2-base-patch16-naflex): images keep their
aspect ratio, cut into at most ``max_num_patches`` patches (``Siglip2ImageProcessor``); the vision
tower attends over the real patches only and pools them with its attention head. Text goes
through the Gemma tokenizer (lower-cased, as SigLIP 2 was trained), padded to 64 tokens.

SigLIP 2 fixed-resolution checkpoints (google/siglip2-base-patch16-224) are ``SiglipModel``
checkpoints and load with models/siglip.py.

Images and texts are prepared as ``Siglip2Processor.__call__`` prepares them: its own defaults
(``max_num_patches`` 256, ``patch_size`` 16, text padded to 64) win over the image processor's and
tokenizer's attributes there, and blipsearch applies the same ones.

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


def processor_image_kwargs(processor: Any) -> dict[str, Any]:
    """The image options ``Siglip2Processor.__call__`` passes its image processor: the processor's own
    ``images_kwargs`` defaults (``patch_size``, ``max_num_patches``) win over the image processor's
    attributes there, so preprocessing through them equals ``processor(images=...)``."""
    valid = set(getattr(getattr(processor.image_processor, "valid_kwargs", None), "__annotations__", {}))
    given = dict(getattr(processor, "images_kwargs", None) or {})
    return {k: v for k, v in given.items() if not valid or k in valid}


class NaflexPreprocessor(ImagePreprocessor):
    def __init__(self, image_processor: Any, options: dict[str, Any]) -> None:
        super().__init__(image_processor)
        self.options = options

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        return pack(self.image_processor(list(images), return_tensors="np", **self.options))


class Siglip2Embedder(DualEncoderEmbedder):
    family = "siglip2"
    model_class = "Siglip2Model"
    what = "SigLIP 2"
    text_padding = "max_length"
    text_max_length = 64  # Siglip2Processor's default, as the models were trained

    @property
    def input_size(self) -> int | None:
        """The side a square image is resized to under the patch budget: what JPEG draft decoding aims at."""
        opts = {**vars(self.processor.image_processor), **self.preprocessor().options}
        patch, budget = opts.get("patch_size"), opts.get("max_num_patches")
        return int(patch * int(budget**0.5)) if patch and budget else None

    def preprocessor(self) -> NaflexPreprocessor:
        return NaflexPreprocessor(self.processor.image_processor, processor_image_kwargs(self.processor))

    def _text_limit(self, max_positions: int) -> int:
        # Siglip2Processor pads every text to its own max_length (64), whatever the tokenizer's
        # model_max_length says; the positions the text tower has cap it.
        want = dict(getattr(self.processor, "text_kwargs", None) or {}).get("max_length", self.text_max_length)
        return int(min(want or max_positions, max_positions))

    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        pixels, mask, shapes = unpack(pixel_values)
        dev = self.model.device
        with torch.inference_mode():
            out = self.model.get_image_features(
                pixel_values=self._pixels(pixels), pixel_attention_mask=mask.to(dev), spatial_shapes=shapes.to(dev)
            )
            return F.normalize(_features(out).float(), dim=-1).cpu().numpy()
