"""HEIC/HEIF through pillow-heif (the ``heif`` extra): registered as a Pillow plugin once, on
first use, so the one safe decode (media/decode.py) reads the size from the container header
before any pixel is decoded, and the EXIF of the primary image like any other format's. A
multi-image file decodes its primary image."""

from __future__ import annotations

import threading

from media.formats import missing

_lock = threading.Lock()
_registered = False


def ensure_opener() -> None:
    """Let Pillow open HEIF files; a per-file failure with the install line when pillow-heif is missing."""
    global _registered
    with _lock:
        if _registered:
            return
        try:
            import pillow_heif
        except ImportError:
            raise missing("HEIC/HEIF", "heif", "pillow-heif") from None
        # thumbnails and depth images are not needed: only the primary image is decoded
        pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
        _registered = True
