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

import io
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

from PIL import Image
from starlette.concurrency import run_in_threadpool

from blipsearch.errors import PayloadTooLargeError

T = TypeVar("T")


class DecodeGate:
    """Runs decodes in the thread pool, at most ``limit`` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.running = 0

    async def run(self, fn: Callable[[], T]) -> T:
        def bounded() -> T:
            with self._slots:
                with self._lock:
                    self.running += 1
                try:
                    return fn()
                finally:
                    with self._lock:
                        self.running -= 1

        return await run_in_threadpool(bounded)


def header_pixels(data: bytes) -> int:
    """width × height from the image header (nothing is decoded); 0 if it cannot be read
    (the decode reports that file's error)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(data)).size
        return max(int(width), 0) * max(int(height), 0)
    except Exception:  # noqa: BLE001 - not an image, or a bomb past Pillow's own limit: decoded later
        return 0


def check_request_pixels(images: Sequence[bytes], budget: int) -> None:
    """Refuse (413) a request whose images hold more than ``budget`` pixels in all."""
    total = sum(header_pixels(d) for d in images)
    if total > budget:
        raise PayloadTooLargeError(
            f"The images of this request hold {total} pixels, over the {budget}-pixel limit per request "
            "(BLIPSEARCH_MAX_REQUEST_PIXELS); send fewer or smaller images per request."
        )
