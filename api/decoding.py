"""Decoding uploads in the API: off the event loop, a bounded number at
a time, reduced to the model's input side where the format allows, within a pixel budget per
request on top of the per-image limit.

A compressed image can expand a thousandfold when decoded (a 0.3 MB PNG of 9800×9800 pixels
is 290 MB as RGB), so the API never decodes on the event loop (``/healthz`` and every other
request keep being served), at most ``BLIPSEARCH_MAX_CONCURRENT_DECODES`` at once (the rest
wait), and refuses a request whose images hold more than ``BLIPSEARCH_MAX_REQUEST_PIXELS``
from their headers alone, before decoding any of them.
"""

from __future__ import annotations

import functools
import io
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from PIL import Image
from starlette.concurrency import run_in_threadpool

from api.uploads import sniff, sniff_and_decode
from blipsearch.errors import PayloadTooLargeError

if TYPE_CHECKING:
    from blipsearch.config import Settings
    from media.decode import DecodedImage

T = TypeVar("T")


class DecodeGate:
    """Runs decodes in the thread pool, at most ``limit`` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0  # the most decodes that ever ran at once
        self.total = 0  # decodes run so far

    def run_sync(self, fn: Callable[[], T]) -> T:
        """``fn()`` in this thread once a slot is free (for routes already off the event loop)."""
        with self._slots:
            with self._lock:
                self.running += 1
                self.total += 1
                self.peak = max(self.peak, self.running)
            try:
                return fn()
            finally:
                with self._lock:
                    self.running -= 1

    async def run(self, fn: Callable[[], T]) -> T:
        return await run_in_threadpool(self.run_sync, fn)


def header_pixels(data: bytes) -> int:
    """width × height from the image header (nothing is decoded), or a lower bound of it where
    Pillow refuses to open the header as a decompression bomb (over twice its process-wide
    ``MAX_IMAGE_PIXELS``, which media/decode.py may have raised); 0 if the header cannot be read
    (the decode reports that file's error)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(data)).size
        return max(int(width), 0) * max(int(height), 0)
    except Image.DecompressionBombError:
        return 2 * int(Image.MAX_IMAGE_PIXELS or 0) + 1
    except Exception:  # noqa: BLE001 - not an image: its decode reports why
        return 0


def check_request_pixels(images: Sequence[bytes], budget: int, per_image: int | None = None) -> None:
    """Refuse (413) a request whose images hold more than ``budget`` pixels in all. An image over
    ``per_image`` (BLIPSEARCH_MAX_IMAGE_PIXELS) is left to its decode, which refuses it alone
    (422) before any pixel is decoded, so the answer never depends on Pillow's process-wide limit."""
    sizes = [header_pixels(d) for d in images]
    total = sum(n for n in sizes if per_image is None or n <= per_image)
    if total > budget:
        raise PayloadTooLargeError(
            f"The images of this request hold {total} pixels, over the {budget}-pixel limit per request "
            "(BLIPSEARCH_MAX_REQUEST_PIXELS); send fewer or smaller images per request."
        )


def check_uploads(settings: Settings, items: Sequence[tuple[bytes, str | None, str | None]]) -> None:
    """The checks of uploaded images ((data, filename, content type) each) that need no decode
    and no model: the request's pixel budget (413), then each one's format and declared type
    from its header (415 / 422). Routes run them before loading a model."""
    check_request_pixels([data for data, _, _ in items], settings.max_request_pixels, settings.max_image_pixels)
    for data, filename, content_type in items:
        sniff(data, filename, content_type, settings.max_image_pixels)


def draft_side(settings: Settings, input_size: int | None) -> int | None:
    """The side to decode reduced to (the model's input side), or None for a full decode."""
    return input_size if settings.decode_draft() else None


async def decode_uploads(
    gate: DecodeGate,
    settings: Settings,
    items: Sequence[tuple[bytes, str | None, str | None]],
    side: int | None,
) -> list[DecodedImage]:
    """The one way the API decodes uploaded bytes ((data, filename, content type) per image):
    the request's pixel budget from the headers first (413 before anything is decoded), then
    each image through ``gate`` (off the event loop, a bounded number at once), reduced to
    ``side`` where the format allows (``draft_side``)."""
    check_request_pixels([data for data, _, _ in items], settings.max_request_pixels, settings.max_image_pixels)
    limit = settings.max_image_pixels
    return [
        await gate.run(functools.partial(sniff_and_decode, d, n, c, limit, side, settings.decode_timeout_s))
        for d, n, c in items
    ]
