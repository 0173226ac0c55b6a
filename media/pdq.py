"""PDQ perceptual hashes (Meta's open image hash) of decoded images, through the ``pdqhash`` package.

The hash is Meta's reference C++ implementation run on the image's RGB pixels (the upright,
fully decoded image of ``media/decode.py``), written as ThreatExchange writes it: the 256 bits
in order, most significant first, as 64 lower-case hex digits (``threatexchange``'s
``pdq_hasher`` does the same conversion). ``quality`` is PDQ's own 0-100 score: hashes of
flat, featureless images (quality under about 50) match one another by accident.

Hashes compare by Hamming distance; 31 of 256 bits is the usual match threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from blipsearch.errors import InvalidInputError, MissingDependencyError

if TYPE_CHECKING:
    from PIL import Image

BITS = 256
HEX_LEN = BITS // 4
# pdqhash.compute_dihedral's order: the hash of the image, then of its dihedral variants.
DIHEDRAL = ("original", "rot90", "rot180", "rot270", "flip_vertical", "flip_horizontal", "transpose", "transverse")


@dataclass(frozen=True)
class PdqHash:
    hex: str  # 64 lower-case hex digits
    quality: int  # 0-100


def require() -> Any:
    """The pdqhash module, or MissingDependencyError with the install line."""
    try:
        import pdqhash
    except ImportError:
        raise MissingDependencyError("PDQ hashing", "pdqhash", "moderation") from None
    return pdqhash


def available() -> bool:
    try:
        require()
    except MissingDependencyError:
        return False
    return True


def _pixels(image: Image.Image) -> np.ndarray:
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def bits_to_hex(bits: np.ndarray) -> str:
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def pdq_hash(image: Image.Image) -> PdqHash:
    """The PDQ hash and quality of an RGB image."""
    bits, quality = require().compute(_pixels(image))
    return PdqHash(bits_to_hex(bits), int(quality))


def pdq_dihedral(image: Image.Image) -> tuple[list[str], int]:
    """The hashes of the image and of its 7 rotations and flips (``DIHEDRAL`` order), in one pass."""
    variants, quality = require().compute_dihedral(_pixels(image))
    return [bits_to_hex(v) for v in variants], int(quality)


def parse_hex(text: str) -> bytes:
    """32 bytes of a 64-hex-digit PDQ hash (either case); InvalidInputError otherwise."""
    s = text.strip()
    if len(s) != HEX_LEN:
        raise InvalidInputError(f"a PDQ hash is {HEX_LEN} hex digits, not {len(s)}")
    try:
        return bytes.fromhex(s)
    except ValueError:
        raise InvalidInputError("a PDQ hash is hex digits only (0-9, a-f)") from None


def distance(a: str, b: str) -> int:
    """Hamming distance of two hex hashes."""
    return int.from_bytes(parse_hex(a), "big").__xor__(int.from_bytes(parse_hex(b), "big")).bit_count()
