"""Camera RAW (DNG, CR2/CR3, NEF, ARW, RAF, ORF, RW2, PEF...) through rawpy/LibRaw (the ``raw``
extra).

The sensor's size is read from the file's header before anything is unpacked, so the pixel
budget holds before decoding. Then either the embedded preview (the camera's own JPEG or
bitmap) when its shorter side is at least ``need`` pixels (the model's input side): far
faster than demosaicing and what the camera showed; or a full demosaic (camera white balance,
8-bit sRGB; at half size when half the sensor still covers ``need``). The preview is decoded
by the same safe decode as any JPEG (its own pixel budget), and turned upright by the RAW's
orientation. Anything LibRaw refuses (an unknown camera, a truncated file) is a per-file
failure with LibRaw's reason.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from blipsearch.errors import ImageDecodeError
from media.formats import missing

# LibRaw's ``flip`` -> the PIL transposition that makes the image upright
_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}
DEFAULT_NEED = 512  # the preview side asked for when the caller names no model input side


@dataclass
class RawDecoded:
    image: Image.Image
    width: int  # the upright full-sensor output size (not the preview's)
    height: int
    source: str  # "preview" or "demosaic"


def _rawpy() -> Any:
    try:
        import rawpy
    except ImportError:
        raise missing("Camera RAW", "raw", "rawpy") from None
    return rawpy


def open_raw(data: bytes) -> Any:
    """The LibRaw handle of ``data`` (headers parsed, nothing unpacked)."""
    rawpy = _rawpy()
    try:
        return rawpy.imread(io.BytesIO(data))
    except rawpy.LibRawFileUnsupportedError:
        raise ImageDecodeError("a RAW file LibRaw does not support (unknown camera?)", "unsupported_raw") from None
    except rawpy.LibRawError as exc:
        raise ImageDecodeError(f"corrupt RAW file: {_reason(exc)}", "corrupt") from None


def _reason(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def decode_raw(
    data: bytes, max_pixels: int, need: int | None, decode_preview: Callable[[bytes], Image.Image]
) -> RawDecoded:
    """Decode a RAW file within ``max_pixels``; ``decode_preview`` decodes an embedded JPEG
    (media/decode.py's safe decode)."""
    rawpy = _rawpy()
    need = need or DEFAULT_NEED
    with open_raw(data) as raw:
        s = raw.sizes
        width, height = (s.height, s.width) if s.flip in (5, 6) else (s.width, s.height)
        sensor = max(s.raw_width * s.raw_height, width * height)
        if width <= 0 or height <= 0:
            raise ImageDecodeError(f"invalid RAW size {s.width}x{s.height}", "invalid_size")
        if sensor > max_pixels:
            raise ImageDecodeError(
                f"RAW sensor is {s.raw_width}x{s.raw_height} = {sensor} pixels, over the {max_pixels}-pixel limit "
                "(decompression-bomb guard; raise BLIPSEARCH_MAX_IMAGE_PIXELS to allow it)",
                "too_many_pixels",
            )
        try:
            preview = _preview(raw, rawpy, need, decode_preview)
            if preview is not None:
                # a preview already upright by its own EXIF (its aspect matches) is not turned again
                flip = _FLIP.get(s.flip)
                if flip is not None and (s.flip == 3 or (preview.width > preview.height) != (width > height)):
                    preview = preview.transpose(flip)
                return RawDecoded(preview, width, height, "preview")
            half = min(s.width, s.height) // 2 >= need
            rgb = raw.postprocess(use_camera_wb=True, output_bps=8, half_size=half)
        except rawpy.LibRawError as exc:
            raise ImageDecodeError(f"corrupt RAW file: {_reason(exc)}", "corrupt") from None
        except MemoryError:
            raise ImageDecodeError("RAW file too large to demosaic in memory", "too_many_pixels") from None
    return RawDecoded(Image.fromarray(np.ascontiguousarray(rgb)), width, height, "demosaic")


def _preview(raw: Any, rawpy: Any, need: int, decode_preview: Callable[[bytes], Image.Image]) -> Image.Image | None:
    """The embedded preview if it has at least ``need`` pixels a side, else None."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except rawpy.LibRawError:
        return None  # a broken preview: the sensor data may still demosaic
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            img = decode_preview(bytes(thumb.data))
        except ImageDecodeError:
            return None
    elif thumb.format == rawpy.ThumbFormat.BITMAP:
        arr = np.asarray(thumb.data)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            return None
        img = Image.fromarray(np.ascontiguousarray(arr))
    else:
        return None
    return img if min(img.size) >= need else None
