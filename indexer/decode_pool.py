"""The decode stage: bytes → upright RGB → the checkpoint's preprocessing, in threads or processes.

``DecodeStage(mode="process")`` runs decoding in a pool of worker processes (spawned, so no
torch state is forked), each holding the image processors it was given once at start-up;
it is the default for bulk jobs (512+ images) on machines with 4+ cores, where Pillow's
Python-level work would otherwise contend for the GIL with the model loop.
``mode="thread"`` decodes in the calling thread (the pipeline's I/O threads), which is
cheaper to start; it serves small inputs (uploads) and machines with few cores.

Both produce the same arrays (the same function runs in both). A worker process that dies
(a decoder crash on a hostile file) is replaced, the item is retried once on the fresh pool,
and a second crash is recorded as that item's failure (reason ``decoder_crashed``).

Each decode has a time limit (``DecodeConfig.timeout_s``, media/deadline.py): a worker process
is ended by the kernel at the deadline (the file fails with ``decode_timeout``, not retried, and
the pool is replaced); in thread mode the caller stops waiting at the deadline.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np

from blipsearch.errors import ImageDecodeError
from media import deadline
from media.decode import decode_image
from media.exif import capture_columns

Preprocess = Callable[[Sequence[Any]], np.ndarray]
MODES = ("auto", "process", "thread")
PROCESS_MIN_ITEMS = 512  # auto: below this, starting processes costs more than it saves
PROCESS_MIN_CORES = 4


@dataclass
class Decoded:
    pixels: np.ndarray
    caption_pixels: np.ndarray | None
    meta: dict[str, Any]
    ocr_image: np.ndarray | None = None  # the decoded image for OCR (RGB uint8, at most ocr_pixels)


@dataclass
class DecodeConfig:
    preprocess: Preprocess
    caption_preprocess: Preprocess | None
    max_pixels: int
    draft: int | None
    pdq: bool = False  # PDQ-hash the fully decoded image (media/pdq.py); no JPEG draft then
    ocr_pixels: int | None = None  # keep the decoded image for OCR, downscaled to this many pixels
    timeout_s: float | None = None  # time limit of one decode (media/deadline.py); None: none


def decode_bounded(cfg: DecodeConfig, data: bytes) -> Decoded:
    """``decode_one`` under the config's time limit, in a thread (media/deadline.py): the one way
    a caller outside ``DecodeStage`` (Ray actors, import checks) decodes."""
    return deadline.run_with_deadline(lambda: decode_one(cfg, data), cfg.timeout_s)


def decode_one(cfg: DecodeConfig, data: bytes) -> Decoded:
    # PDQ is defined on the full decode: a draft-scale JPEG would hash differently.
    img = decode_image(data, cfg.max_pixels, None if cfg.pdq else cfg.draft, with_exif=True)
    pixels = cfg.preprocess([img.image])[0]
    cap = cfg.caption_preprocess([img.image])[0] if cfg.caption_preprocess else None
    meta: dict[str, Any] = {"width": img.width, "height": img.height, "format": img.format, "bytes": len(data)}
    meta.update(capture_columns(img.exif, img.xmp))  # when and where it was taken (media/exif.py)
    if cfg.pdq:
        from media.pdq import pdq_hash

        h = pdq_hash(img.image)
        meta.update(pdq_hash=h.hex, pdq_quality=h.quality)
    ocr = _ocr_array(img.image, cfg.ocr_pixels) if cfg.ocr_pixels else None
    return Decoded(pixels, cap, meta, ocr)


def _ocr_array(image: Any, max_pixels: int) -> np.ndarray:
    """The decoded image as OCR reads it: one decode serves the embedder and OCR."""
    w, h = image.size
    if w * h > max_pixels:
        s = (max_pixels / (w * h)) ** 0.5
        image = image.resize((max(1, int(w * s)), max(1, int(h * s))))
    return np.asarray(image.convert("RGB") if image.mode != "RGB" else image)


# -- worker process side ------------------------------------------------------------------
_CFG: DecodeConfig | None = None


def _exit_with_parent(parent: int) -> None:
    """A worker whose job process was SIGKILLed is re-parented; it must not linger."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def _init_worker(cfg: DecodeConfig) -> None:
    global _CFG
    _CFG = cfg
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True, name="parent-watch").start()
    try:  # one decode thread per process: the pool is the parallelism
        import cv2  # pragma: no cover - only if present

        cv2.setNumThreads(1)
    except ImportError:
        pass


def _work(data: bytes) -> Decoded | tuple[str, str]:
    assert _CFG is not None
    deadline.arm_process_alarm(_CFG.timeout_s)  # past it (CPU seconds), the kernel ends this process
    try:
        return decode_one(_CFG, data)
    except ImageDecodeError as exc:  # sent back as plain values: exceptions with extra args do not pickle
        return (str(exc), exc.reason)
    finally:
        deadline.disarm_process_alarm()


def resolve_mode(mode: str, items: int | None) -> str:
    if mode not in MODES:
        raise ValueError(f"decode mode must be one of {MODES}")
    if mode != "auto":
        return mode
    # Worker processes need cores of their own next to the model; with 1-3 cores, threads
    # (Pillow releases the GIL while decoding) do as well without the start-up cost.
    if (os.cpu_count() or 1) < PROCESS_MIN_CORES:
        return "thread"
    return "process" if items is None or items >= PROCESS_MIN_ITEMS else "thread"


class DecodeStage:
    def __init__(self, cfg: DecodeConfig, mode: str = "thread", processes: int = 2) -> None:
        self.cfg = cfg
        self.mode = mode
        self.processes = max(1, processes)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _get_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(self.cfg,),
                )
            return self._pool

    def _replace_pool(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                broken.shutdown(wait=False, cancel_futures=True)
                self._pool = None

    def __call__(self, data: bytes) -> Decoded:
        """Decode one image. Raises ImageDecodeError with a reason code."""
        timeout = self.cfg.timeout_s
        if self.mode == "thread":
            return decode_bounded(self.cfg, data)
        for attempt in range(2):
            pool = self._get_pool()
            t0 = time.monotonic()
            try:
                out = pool.submit(_work, data).result()
            except BrokenProcessPool:
                self._replace_pool(pool)
                # ended by its time limit (CPU time <= the wall time waited): not retried
                if timeout and time.monotonic() - t0 >= timeout:
                    raise deadline.timeout_error(timeout) from None
                if attempt == 1:
                    raise ImageDecodeError("the decoder process crashed on this file", "decoder_crashed") from None
                continue
            if isinstance(out, tuple):
                raise ImageDecodeError(out[0], out[1])
            return out
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
