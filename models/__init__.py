"""Layer 2 (parts). Model wrappers. The only package in blipsearch that imports ``transformers``.

Importing this package is cheap: torch and transformers load on first use of a loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blipsearch.limits import ITM_BATCH_SIZE

if TYPE_CHECKING:
    from models.base import Embedder
    from models.itm import ItmScorer
    from models.options import EmbedderOptions

__all__ = ["load_embedder", "load_itm", "load_itm_model"]


def load_embedder(source: str, options: EmbedderOptions | None = None, **overrides: Any) -> Embedder:
    """Load a retrieval checkpoint (hub id or local directory) of any embedding family as an Embedder:
    BLIP, BLIP-2, CLIP, SigLIP or ALIGN, chosen by its ``config.model_type`` (models/families.py).

    ``options`` (models/options.py: device, dtype, batch size, text pre-processing, precision,
    fast runtime), with ``overrides`` of its fields by name (``device="cpu"``). With
    ``text_preprocess="blip"`` query and ITM texts go through BLIP's ``pre_caption`` before
    tokenizing, as the models were trained; ITM scorers from ``load_itm`` share the embedder's
    tokenizer path, so they get the same pre-processing.
    """
    from dataclasses import replace

    from models.options import EmbedderOptions
    from models.registry import load_embedder as _load

    return _load(source, replace(options or EmbedderOptions(), **overrides))


def load_itm(embedder: Embedder, *, first_token: str = "enc", batch_size: int = ITM_BATCH_SIZE) -> ItmScorer:
    """The ITM scorer sharing ``embedder``'s loaded model (BLIP or BLIP-2); NoItmModelError otherwise."""
    from models.registry import itm_for

    return itm_for(embedder, first_token=first_token, batch_size=batch_size)


def load_itm_model(
    source: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    first_token: str = "enc",
    batch_size: int = ITM_BATCH_SIZE,
) -> ItmScorer:
    """A BLIP / BLIP-2 ITM scorer loaded from its own checkpoint, for any collection's shortlist."""
    from models.registry import load_itm_model as _load

    return _load(source, device=device, dtype=dtype, first_token=first_token, batch_size=batch_size)
