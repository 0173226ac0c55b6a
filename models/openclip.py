"""OpenCLIP checkpoints (the ``openclip`` extra): a directory in OpenCLIP's layout,
``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) beside ``open_clip_model.safetensors``
(or ``open_clip_pytorch_model.bin``), as OpenCLIP's ``push_to_hf_hub`` writes it; ``hf-hub:org/repo``
names such a repository on the Hugging Face Hub.

The model is built by ``open_clip`` from the config, without weights, and the weights load only
through safe formats: safetensors, or ``torch.load(weights_only=True)`` for ``.bin`` (never a
pickle with code, never remote code). Vectors are OpenCLIP's own ``encode_image`` /
``encode_text`` (normalised), images go through its own eval transform, texts through its own
tokenizer, unchanged. A directory that also has a transformers ``config.json`` loads with
transformers instead (models/registry.py).

``open_clip`` imports torchvision, which must pair with the installed torch: ``pip install
'blipsearch[openclip]'`` with a torch whose torchvision build exists (scripts/openclip_tests.sh).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from blipsearch.errors import ModelLoadError
from blipsearch.limits import BATCH_SIZE
from models.dual_encoder import DualEncoderEmbedder
from models.openclip_config import HUB_PREFIX, is_multilingual, local_dir, read_config, weights_file
from models.runtime import fingerprint

if TYPE_CHECKING:
    from PIL import Image

INSTALL_HINT = (
    "OpenCLIP checkpoints need the openclip extra: pip install 'blipsearch[openclip]' "
    "(open_clip_torch, with a torchvision build that pairs with your torch)."
)


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as exc:  # open_clip itself, or torchvision under it
        raise ModelLoadError(f"{INSTALL_HINT} ({type(exc).__name__}: {exc})") from exc
    return open_clip


class OpenClipPreprocessor:
    """OpenCLIP's eval transform as a picklable ``images -> [n, 3, H, W]`` float32 function."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([self.transform(img).numpy() for img in images]).astype(np.float32, copy=False)


class OpenClipEmbedder(DualEncoderEmbedder):
    family = "openclip"
    model_class = "open_clip"
    what = "OpenCLIP"

    def __init__(self, source: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = BATCH_SIZE) -> None:
        open_clip = _import_open_clip()
        from open_clip.transform import PreprocessCfg, image_transform_v2

        root = local_dir(source)
        model_id = source if source.startswith(HUB_PREFIX) else str(root)
        dev = self._setup(source, device, dtype, batch_size, text_preprocess="none", model_id=model_id)
        cfg = read_config(root)
        weights = weights_file(root)
        name = f"local-dir:{root}"
        try:
            # the architecture only: no weights, no pretrained towers fetched from anywhere
            model = open_clip.create_model(
                name, load_weights=False, pretrained_image=False, pretrained_text=False, device="cpu"
            )
            open_clip.load_checkpoint(model, str(weights), strict=True, weights_only=True)
            self.tokenizer: Any = open_clip.get_tokenizer(name)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"Could not load the OpenCLIP checkpoint {root}: {type(exc).__name__}: {exc}") from exc
        preprocess_cfg = open_clip.get_model_preprocess_cfg(model)
        self.transform = image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)
        self._side = preprocess_cfg.get("size")
        self.model: Any = model.to(device=dev, dtype=self.torch_dtype).eval()
        self.torch_device = dev  # open_clip models have no .device
        self.processor = None
        self.multilingual = is_multilingual(cfg["model_cfg"])
        self.max_text_tokens = int(getattr(self.tokenizer, "context_length", 77))
        self.dim = int(self.embed_texts(["a"]).shape[1])
        params = [p for _, p in model.named_parameters()]
        self.fingerprint = fingerprint(
            {"family": self.family, "dim": self.dim, "model_cfg": cfg["model_cfg"]}, params[0], params[-1]
        )

    @property
    def input_size(self) -> int | None:
        side = self._side
        return int(max(side)) if isinstance(side, list | tuple) else (int(side) if side else None)

    def preprocessor(self) -> OpenClipPreprocessor:  # type: ignore[override]
        return OpenClipPreprocessor(self.transform)

    def _pixels(self, pixel_values: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(pixel_values).to(self.torch_device, self.torch_dtype)

    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            feats = self.model.encode_image(self._pixels(pixel_values))
            return F.normalize(feats.float(), dim=-1).cpu().numpy()

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokenizer(list(texts)).to(self.torch_device)}

    def _text_features(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(enc["input_ids"]).float(), dim=-1)
