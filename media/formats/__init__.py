"""Container formats beyond what Pillow reads on its own, one module each: HEIC/HEIF
(``heif``: pillow-heif), AVIF (``avif``: Pillow's own codec), camera RAW (``raw``: rawpy/LibRaw).

``sniff`` names a container from its first bytes (never from a file name); media/decode.py
sends every image through one safe decode that asks these modules for what they add. Each
decoder is an optional extra, imported lazily: a missing one is a per-file failure whose
message says what to install (``missing_decoder``).
"""

from __future__ import annotations

from blipsearch.errors import ImageDecodeError

# Stored format -> media type of the original, for the formats browsers do not render inline.
# (JPEG, PNG, WebP, GIF, AVIF... are in api/security.py's inline types.)
ORIGINAL_TYPES = {
    "HEIF": "image/heic",
    "DNG": "image/x-adobe-dng",
    "CR2": "image/x-canon-cr2",
    "CR3": "image/x-canon-cr3",
    "NEF": "image/x-nikon-nef",
    "ARW": "image/x-sony-arw",
    "RAF": "image/x-fuji-raf",
    "ORF": "image/x-olympus-orf",
    "RW2": "image/x-panasonic-rw2",
    "PEF": "image/x-pentax-pef",
    "SRW": "image/x-samsung-srw",
    "RAW": "application/octet-stream",
}
# File name extension of a served original, per stored format.
EXTENSIONS = {"HEIF": "heic", "RAW": "raw"}


def missing(what: str, extra: str, package: str) -> ImageDecodeError:
    """The per-file failure for a format whose optional decoder is not installed."""
    return ImageDecodeError(
        f"{what} needs the optional {package} decoder: pip install 'blipsearch[{extra}]' (or scripts/setup.sh)",
        "missing_decoder",
    )
