"""Uploads: size limit while reading, content sniffing (never the filename), decode guard."""

from __future__ import annotations

from fastapi import UploadFile

from blipsearch.errors import ImageDecodeError, PayloadTooLargeError, UnsupportedMediaTypeError
from media.deadline import run_with_deadline
from media.decode import DecodedImage, allow_pixels, decode_image, probe_format
from media.formats import ORIGINAL_TYPES

# What a declared Content-Type / extension may be, for each format Pillow detects.
_ALIASES = {
    "JPEG": {"image/jpeg", "image/jpg", "image/pjpeg", ".jpg", ".jpeg", ".jpe", ".jfif"},
    "PNG": {"image/png", ".png"},
    "WEBP": {"image/webp", ".webp"},
    "GIF": {"image/gif", ".gif"},
    "BMP": {"image/bmp", "image/x-ms-bmp", ".bmp"},
    "TIFF": {"image/tiff", ".tif", ".tiff"},
    "HEIF": {"image/heic", "image/heif", "image/heic-sequence", "image/heif-sequence", ".heic", ".heif", ".hif"},
    "AVIF": {"image/avif", ".avif"},
    **{raw: {mime, f".{raw.lower()}"} for raw, mime in ORIGINAL_TYPES.items() if raw not in ("HEIF", "RAW")},
}
_NEUTRAL = {"", "application/octet-stream", "image/*"}


async def read_limited(upload: UploadFile, max_bytes: int) -> bytes:
    chunks, total = [], 0
    while chunk := await upload.read(1 << 20):
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLargeError(f"Upload {upload.filename!r} is over the {max_bytes}-byte limit.")
        chunks.append(chunk)
    return b"".join(chunks)


def sniff_and_decode(
    data: bytes,
    filename: str | None,
    content_type: str | None,
    max_pixels: int,
    draft: int | None = None,
    timeout_s: float | None = None,
) -> DecodedImage:
    """Decode by content; refuse a declared type or extension that contradicts the content.
    ``draft``: the model's input side, to decode large images reduced (indexer/decode.py).
    ``timeout_s``: the decode's time limit (``BLIPSEARCH_DECODE_TIMEOUT_S``, media/deadline.py);
    past it the upload is refused as undecodable."""
    sniff(data, filename, content_type, max_pixels)
    return run_with_deadline(lambda: decode_image(data, max_pixels, draft, reduce=draft is not None), timeout_s)


def sniff(data: bytes, filename: str | None, content_type: str | None, max_pixels: int) -> str:
    """The image format of ``data`` from its header alone (nothing decoded): the cheap check a
    route runs before any model load. Refuses what is not an image, or whose declared type or
    extension contradicts the content."""
    if not data:
        raise ImageDecodeError("empty upload")
    allow_pixels(max_pixels)
    fmt = probe_format(data)  # HEIC/AVIF/RAW too (media/formats/)
    if fmt is None:
        raise UnsupportedMediaTypeError("The upload is not an image format blipsearch can read.")
    allowed = _ALIASES.get(fmt, set())
    declared = (content_type or "").split(";")[0].strip().lower()
    ext = ("." + filename.rsplit(".", 1)[-1].lower()) if filename and "." in filename else ""
    if declared not in _NEUTRAL and declared not in allowed:
        raise UnsupportedMediaTypeError(f"Declared type {declared!r} but the content is {fmt}.")
    if ext and ext in {a for v in _ALIASES.values() for a in v} and ext not in allowed:
        raise UnsupportedMediaTypeError(f"File name says {ext!r} but the content is {fmt}.")
    return str(fmt)
