"""Model wrappers. The only package in blipsearch that imports ``transformers``.

Importing this package is cheap: torch and transformers load on first use of a loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.base import Embedder

__all__ = ["load_embedder"]


def load_embedder(source: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 32) -> Embedder:
    """Load a BLIP or BLIP-2 retrieval checkpoint (hub id or local directory) as an Embedder."""
    from models.registry import load_embedder as _load

    return _load(source, device=device, dtype=dtype, batch_size=batch_size)
