"""Safe image decoding: size limits, decompression-bomb guard, EXIF orientation, RGB.

The one decode of every image, whatever its container: what Pillow reads on its own, HEIC/HEIF
and AVIF as Pillow plugins, camera RAW through LibRaw (media/formats/). The pixel budget is
checked from the container's header before any pixel is decoded; multi-frame files (animated
GIF/WebP, multi-page TIFF, HEIF sequences) decode their first (primary) frame.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from blipsearch.errors import ImageDecodeError
from media.formats.sniff import sniff

RAW_FORMATS = frozenset({"DNG", "CR2", "CR3", "NEF", "ARW", "PEF", "RAF", "ORF", "RW2", "SRW"})


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
    # with ``with_exif``: the container's EXIF (before orientation is applied) and XMP packet
    exif: Image.Exif | None = None
    xmp: bytes | None = None


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


def decode_image(
    data: bytes, max_pixels: int, draft: int | None = None, reduce: bool = False, with_exif: bool = False
) -> DecodedImage:
    """Decode ``data`` to an RGB image, upright per EXIF. Raises ImageDecodeError with a reason.

    ``draft``: the model's input side. A JPEG at least twice that size on both sides is decoded
    at 1/2, 1/4 or 1/8 scale in the DCT (Pillow's draft mode), never below ``draft`` pixels a
    side, which the processor then resizes as usual: several times faster, and equal to the
    full decode's preprocessing within a small tolerance (tests/test_decode_draft.py).
    ``reduce``: other formats at least twice ``draft`` on both sides are box-reduced by an
    integer factor right after decoding, never below ``draft`` a side, before the RGB conversion
    and everything after it (the API's query decodes).
    ``width`` and ``height`` are always the original's. Camera RAW: the embedded preview when
    its shorter side reaches ``draft`` (media/formats/raw.py), else a demosaic.
    ``with_exif``: also return the container's EXIF and XMP (capture metadata, media/exif.py).
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)", "empty")
    allow_pixels(max_pixels)
    kind = sniff(data)
    if kind in RAW_FORMATS:
        return _decode_raw(data, kind, max_pixels, draft, with_exif)
    if kind == "HEIF":
        from media.formats.heif import ensure_opener

        ensure_opener()
    elif kind == "AVIF":
        from media.formats.avif import ensure_codec

        ensure_codec()
    exif: Image.Exif | None = None
    xmp: bytes | None = None
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
            if with_exif:
                exif, xmp = container_exif(opened)
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
        if kind is not None:  # the container says HEIF/AVIF, but its image cannot be read
            raise ImageDecodeError(f"corrupt {kind} file: no readable image in it", "corrupt") from None
        raise ImageDecodeError("not a recognised image format", "not_an_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}", "too_many_pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as exc:  # RuntimeError: libheif's
        raise ImageDecodeError(f"corrupt or truncated image: {exc}", "corrupt") from None
    w, h = img.size
    if (w > h) != (width > height):  # EXIF rotated by 90 degrees
        width, height = height, width
    return DecodedImage(img, width, height, fmt, exif, xmp)


def probe_format(data: bytes) -> str | None:
    """The format ``data`` decodes as (``JPEG``, ``HEIF``, ``DNG``...), from its header alone;
    None when it is no image format blipsearch reads. Raises ImageDecodeError for a missing
    decoder and for an image over Pillow's process-wide bomb limit."""
    kind = sniff(data)
    if kind in RAW_FORMATS:
        return kind
    if kind == "HEIF":
        from media.formats.heif import ensure_opener

        ensure_opener()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data)).format
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}", "too_many_pixels") from None
    except Exception:  # noqa: BLE001 - any failure to identify is "not an image"
        return None


def container_exif(opened: Image.Image) -> tuple[Image.Exif | None, bytes | None]:
    """The EXIF and XMP of an opened (not yet decoded) image; (None, None) where unreadable."""
    try:
        exif = opened.getexif()
    except Exception:  # noqa: BLE001 - garbage EXIF must not fail the image: no metadata then
        exif = None
    xmp = opened.info.get("xmp") or opened.info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8", "replace")
    return exif, xmp if isinstance(xmp, bytes) else None


def raw_exif(data: bytes) -> Image.Exif | None:
    """The EXIF of a TIFF-based RAW file (DNG, CR2, NEF, ARW, PEF: IFD0 and its EXIF/GPS IFDs),
    which Pillow cannot open as an image; None for the other RAW containers."""
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    exif = Image.Exif()
    try:
        exif.load(data)
    except Exception:  # noqa: BLE001 - garbage EXIF: no metadata, the image still decodes
        return None
    return exif


def _decode_raw(data: bytes, kind: str, max_pixels: int, draft: int | None, with_exif: bool) -> DecodedImage:
    from media.formats.raw import decode_raw

    def preview(jpeg: bytes) -> Image.Image:
        return decode_image(jpeg, max_pixels, draft=draft).image

    out = decode_raw(data, max_pixels, draft, preview)
    return DecodedImage(out.image, out.width, out.height, kind, raw_exif(data) if with_exif else None)
