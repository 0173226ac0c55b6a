"""Caption generation (kept for imports): the families live in models/captioners/."""

from __future__ import annotations

from models.captioners import DEFAULT_CAPTION_MODEL, Captioner, Decoding, load_captioner

__all__ = ["DEFAULT_CAPTION_MODEL", "Captioner", "Decoding", "load_captioner"]
