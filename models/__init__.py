"""Model wrappers. The only package in blipsearch that imports ``transformers``.

Importing this package is cheap: torch and transformers load on first use of a loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.base import Embedder
    from models.itm import ItmScorer

__all__ = ["load_embedder", "load_itm"]


def load_embedder(
    source: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 32, precision: str = "exact"
) -> Embedder:
    """Load a BLIP or BLIP-2 retrieval checkpoint (hub id or local directory) as an Embedder.

    ``precision``: "exact" (fp32, the transformers forward) or "fast" (models/precision.py).
    """
    from models.registry import load_embedder as _load

    return _load(source, device=device, dtype=dtype, batch_size=batch_size, precision=precision)


def load_itm(embedder: Embedder, *, first_token: str = "enc", batch_size: int = 32) -> ItmScorer:
    """The ITM scorer sharing ``embedder``'s loaded model (BLIP or BLIP-2)."""
    from models.blip import BlipEmbedder
    from models.blip2 import Blip2Embedder

    if isinstance(embedder, BlipEmbedder):
        from models.blip_itm import BlipItmScorer

        return BlipItmScorer(embedder, first_token=first_token, batch_size=batch_size)
    if isinstance(embedder, Blip2Embedder):
        from models.blip2_itm import Blip2ItmScorer

        return Blip2ItmScorer(embedder, batch_size=batch_size)
    raise TypeError(f"No ITM head for {type(embedder).__name__}")
