"""Safe image decoding: size limits, decompression-bomb guard, EXIF orientation, RGB."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from blipsearch.errors import ImageDecodeError


@dataclass
class RawFile:
    path: Path
    data: bytes
    sha256: str


@dataclass
class DecodedImage:
    image: Image.Image
    width: int
    height: int
    format: str | None


def read_file(path: Path, max_bytes: int) -> RawFile:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageDecodeError(f"file is {size} bytes, over the {max_bytes}-byte limit", "too_large_file")
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"unreadable: {exc.strerror or exc}", "unreadable") from exc
    return RawFile(path, data, hashlib.sha256(data).hexdigest())


def read_source(uri: str, path: Path | None, data: bytes | None, max_bytes: int) -> RawFile:
    """The bytes of one input item: already in memory (a tar member), a file to read, or an
    object URL (media/objects.py)."""
    if data is not None:
        if len(data) > max_bytes:
            raise ImageDecodeError(f"{len(data)} bytes, over the {max_bytes}-byte limit", "too_large_file")
        return RawFile(Path(uri), data, hashlib.sha256(data).hexdigest())
    if path is None:
        from media.objects import is_object_url, read_object  # objects: a bounded, retried ranged read

        if is_object_url(uri):
            return read_source(uri, None, read_object(uri, max_bytes), max_bytes)
        raise ImageDecodeError("no path given for this item", "no_path")
    return read_file(path, max_bytes)


def read_image(path: Path, max_bytes: int, max_pixels: int) -> DecodedImage:
    """An image file a user named (not a record's stored original: media/stored.py), read and
    decoded within ``max_bytes`` and ``max_pixels``."""
    return decode_image(read_file(path, max_bytes).data, max_pixels)


def allow_pixels(max_pixels: int) -> None:
    """Let Pillow open images up to ``max_pixels`` (BLIPSEARCH_MAX_IMAGE_PIXELS): Pillow refuses
    anything over twice its own ``MAX_IMAGE_PIXELS`` on open, so a setting above that default had
    no effect. Only ever raised (never lowered, so another caller's larger limit still holds);
    our own per-call check in ``decode_image`` enforces each caller's limit. Called where images
    are decoded, not at import."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "I", "F", "I;16"}


def decode_image(data: bytes, max_pixels: int, draft: int | None = None, reduce: bool = False) -> DecodedImage:
    """Decode ``data`` to an RGB image, upright per EXIF. Raises ImageDecodeError with a reason.

    ``draft``: the model's input side. A JPEG at least twice that size on both sides is decoded
    at 1/2, 1/4 or 1/8 scale in the DCT (Pillow's draft mode), never below ``draft`` pixels a
    side, which the processor then resizes as usual: several times faster, and equal to the
    full decode's preprocessing within a small tolerance (tests/test_decode_draft.py).
    ``reduce``: other formats at least twice ``draft`` on both sides are box-reduced by an
    integer factor right after decoding, never below ``draft`` a side, before the RGB conversion
    and everything after it (the API's query decodes).
    ``width`` and ``height`` are always the original's.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)", "empty")
    allow_pixels(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            opened = Image.open(io.BytesIO(data))
            fmt = opened.format
            img: Image.Image = opened
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageDecodeError(f"invalid image size {width}x{height}", "invalid_size")
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"image is {width}x{height} = {width * height} pixels, over the {max_pixels}-pixel "
                    "limit (decompression-bomb guard; raise BLIPSEARCH_MAX_IMAGE_PIXELS to allow it)",
                    "too_many_pixels",
                )
            if draft and fmt == "JPEG" and min(width, height) >= 2 * draft:
                img.draft("RGB", (draft, draft))
            img.load()
            if reduce and draft and fmt != "JPEG" and min(img.size) // draft >= 2:
                if img.mode == "1":
                    img = img.convert("L")
                if img.mode in _REDUCIBLE:
                    img = img.reduce(min(img.size) // draft)
            img = ImageOps.exif_transpose(img) or img
            if img.mode != "RGB":
                if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                    rgba = img.convert("RGBA")
                    bg = Image.new("RGB", rgba.size, (255, 255, 255))
                    bg.paste(rgba, mask=rgba.getchannel("A"))
                    img = bg
                else:
                    img = img.convert("RGB")
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format", "not_an_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}", "too_many_pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}", "corrupt") from None
    w, h = img.size
    if (w > h) != (width > height):  # EXIF rotated by 90 degrees
        width, height = height, width
    return DecodedImage(img, width, height, fmt)
