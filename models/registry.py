"""Pick the embedder class from a checkpoint's config (BLIP or BLIP-2)."""

from __future__ import annotations

import logging

from blipsearch.errors import ModelLoadError
from models.base import Embedder
from models.loading import from_pretrained


def _quiet_transformers() -> None:
    # The PIL image-processor fallback warning (no torchvision) is expected here and is noise.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def load_embedder(
    source: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 32, precision: str = "exact"
) -> Embedder:
    from transformers import AutoConfig

    _quiet_transformers()
    config = from_pretrained(AutoConfig, source, "model config")
    model_type = getattr(config, "model_type", None)
    if model_type == "blip":
        from models.blip import BlipEmbedder

        return BlipEmbedder(source, device=device, dtype=dtype, batch_size=batch_size, precision=precision)
    if model_type == "blip-2":
        from models.blip2 import Blip2Embedder

        return Blip2Embedder(source, device=device, dtype=dtype, batch_size=batch_size, precision=precision)
    raise ModelLoadError(
        f"Model {source!r} has model_type {model_type!r}; blipsearch embeds with BLIP "
        "(BlipForImageTextRetrieval, e.g. Salesforce/blip-itm-base-coco) or BLIP-2 "
        "(Blip2ForImageTextRetrieval, e.g. Salesforce/blip2-itm-vit-g) retrieval checkpoints."
    )
