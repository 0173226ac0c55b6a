"""AVIF through Pillow's own codec (Pillow 11.2+ wheels are built with libavif): nothing to
register, only a clear message where the installed Pillow lacks it."""

from __future__ import annotations

from blipsearch.errors import ImageDecodeError


def ensure_codec() -> None:
    from PIL import features

    if not features.check("avif"):
        raise ImageDecodeError(
            "AVIF needs a Pillow built with libavif (Pillow >= 11.2 wheels are): pip install -U 'pillow>=11.2'",
            "missing_decoder",
        )
