"""How embedders load: ``EmbedderOptions``, built once at the edge from settings (and flags),
then passed to every loader instead of the same keyword arguments listed at each call."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from blipsearch.limits import BATCH_SIZE
from models.text_preprocess import DEFAULT_MAX_WORDS

if TYPE_CHECKING:
    from blipsearch.config import Settings


@dataclass(frozen=True)
class EmbedderOptions:
    """``device`` and ``dtype`` ("auto" picks), ``batch_size`` items per forward pass,
    ``text_preprocess`` ("blip": BLIP's ``pre_caption``, at most ``text_max_words`` words;
    "none": as given), ``precision`` ("exact" or "fast", models/precision.py), and the ``fast``
    runtime (``fast_runtime``, ``runtime_cache_dir``: models/fast_runtime.py)."""

    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = BATCH_SIZE
    text_preprocess: str = "blip"
    text_max_words: int | None = DEFAULT_MAX_WORDS
    precision: str = "exact"
    fast_runtime: str = "auto"
    runtime_cache_dir: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> EmbedderOptions:
        """The ``BLIPSEARCH_*`` settings (CLI flags already folded in), with ``overrides``."""
        base: dict[str, Any] = {
            "device": settings.device,
            "dtype": settings.dtype,
            "batch_size": settings.batch_size,
            "text_preprocess": settings.text_preprocess,
            "precision": settings.precision,
            "fast_runtime": settings.fast_runtime,
            "runtime_cache_dir": str(settings.openvino_cache_dir()),
        }
        return cls(**{**base, **overrides})

    def kwargs_for(self, cls: type) -> dict[str, Any]:
        """The options ``cls``'s constructor takes (families differ: CLIP has no BLIP text
        pre-processing, only BLIP has a fast-runtime choice)."""
        params = inspect.signature(cls).parameters
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in params}
