"""The one reader of records' stored originals: verify against the record, then decode with the
caller's limits.

Every reader of a stored ``uri`` goes through ``StoredImages``: ``/file`` and thumbnails,
re-ranking, captions, moderation and re-embedding. ``read`` returns the verified bytes
(media/safe_read.py: no symbolic link anywhere on the path, a regular file or tar member, the
record's sha256); ``image`` also decodes them under ``ImageLimits`` (pixel budget, JPEG draft or
box-reduced decode, byte limit). Failures are the ``READ_ERRORS``, each with a clear message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from blipsearch.limits import DECODE_TIMEOUT_S, MAX_FILE_BYTES, MAX_IMAGE_PIXELS
from media.deadline import run_with_deadline
from media.decode import DecodedImage, decode_image
from media.safe_read import READ_ERRORS, read_verified

if TYPE_CHECKING:
    from blipsearch.config import Settings

__all__ = ["READ_ERRORS", "ImageLimits", "StoredImages"]


@dataclass(frozen=True)
class ImageLimits:
    """How far one read and decode may go: ``max_bytes`` read, ``max_pixels`` decoded, within
    ``timeout_s`` (media/deadline.py; None: no limit); ``draft``/``reduce`` as ``decode_image``
    takes them (None/False: a full decode)."""

    max_pixels: int = MAX_IMAGE_PIXELS
    max_bytes: int = MAX_FILE_BYTES
    timeout_s: float | None = DECODE_TIMEOUT_S
    draft: int | None = None
    reduce: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ImageLimits:
        """``BLIPSEARCH_MAX_IMAGE_PIXELS`` and ``BLIPSEARCH_MAX_FILE_BYTES``, with ``overrides``."""
        fields: dict[str, Any] = {
            "max_pixels": settings.max_image_pixels,
            "max_bytes": settings.max_file_bytes,
            "timeout_s": settings.decode_timeout_s,
        }
        return cls(**{**fields, **overrides})


class StoredImages:
    """Reads the stored originals of one collection's records (``aliases``: the collection's
    server-owned links, ``Collection.uri_aliases()``) under ``limits``."""

    def __init__(self, aliases: Mapping[Path, Path], limits: ImageLimits) -> None:
        self.aliases = dict(aliases)
        self.limits = limits

    def read(self, uri: str | None, sha256: str | None) -> bytes:
        """The original's bytes, only while they are what was indexed."""
        return read_verified(uri or "", sha256, self.limits.max_bytes, aliases=self.aliases)

    def decode(self, data: bytes) -> DecodedImage:
        lim = self.limits
        return run_with_deadline(
            lambda: decode_image(data, lim.max_pixels, draft=lim.draft, reduce=lim.reduce), lim.timeout_s
        )

    def image(self, uri: str | None, sha256: str | None) -> Image.Image:
        """The original, verified and decoded (RGB, upright)."""
        return self.decode(self.read(uri, sha256)).image
