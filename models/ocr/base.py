"""The OCR engine base: an RGB image in, lines (text, box, confidence) out, within limits.

Every engine reads an ``np.ndarray`` (H, W, 3) uint8 RGB image and returns an ``OcrResult``:
the lines in reading order (top to bottom, then left to right), each with a 4-point box in the
original image's pixel coordinates and a confidence in [0, 1]. ``OcrLimits`` bound the work per
image: the pixels the detector sees, the regions recognised, and the time spent. A bound that is
hit ends as a result with ``error`` set (a short reason code plus detail) and whatever lines were
read before it; engines never raise for a hostile image.
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blipsearch.limits import OCR_MAX_REGIONS, OCR_MAX_SIDE, OCR_TIME_BUDGET_S

Box = list[list[float]]  # 4 points [[x, y], ...], clockwise from the top-left


@dataclass(frozen=True)
class OcrLimits:
    """Per-image bounds (BLIPSEARCH_OCR_* settings)."""

    max_pixels: int = 16_000_000  # larger images are downscaled before detection
    max_side: int = OCR_MAX_SIDE  # the detector's input side (tiles of a panorama each get this)
    max_tiles: int = 8  # a very wide or tall image is cut into at most this many tiles
    max_regions: int = OCR_MAX_REGIONS  # text regions recognised per image (the largest first)
    time_budget_s: float = OCR_TIME_BUDGET_S  # checked between stages and recognition batches
    min_box_side: float = 3.0  # boxes thinner than this (pixels) are degenerate: dropped


@dataclass
class OcrLine:
    text: str
    box: Box
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "box": [[round(x, 1), round(y, 1)] for x, y in self.box],
            "confidence": self.confidence,
        }


@dataclass
class OcrResult:
    engine: str
    lines: list[OcrLine] = field(default_factory=list)
    error: str | None = None  # "reason: detail" when a bound was hit or the engine failed
    gated: bool = False  # the text-presence gate skipped detection
    seconds: float = 0.0

    def rescaled(self, width: int, height: int, to_width: int, to_height: int) -> OcrResult:
        """Boxes read on a (width x height) copy mapped to the original's (to_width x to_height) pixels."""
        sx, sy = to_width / max(1, width), to_height / max(1, height)
        if abs(sx - 1) < 1e-9 and abs(sy - 1) < 1e-9:
            return self
        for ln in self.lines:
            ln.box = [[x * sx, y * sy] for x, y in ln.box]
        return self

    @property
    def reason(self) -> str | None:
        return self.error.split(":", 1)[0] if self.error else None

    def text(self, min_confidence: float) -> str:
        """The searchable text: lines at or above ``min_confidence``, in reading order, one per line."""
        return "\n".join(ln.text for ln in self.lines if ln.confidence >= min_confidence and ln.text.strip())

    def columns(self, min_confidence: float) -> dict[str, Any]:
        """The record columns: ``ocr_text``, ``ocr_lines`` (JSON), ``ocr_engine``, ``ocr_error``."""
        return {
            "ocr_text": self.text(min_confidence),
            "ocr_lines": json.dumps([ln.to_dict() for ln in self.lines], ensure_ascii=False),
            "ocr_engine": self.engine,
            "ocr_error": self.error,
        }


class OcrBudgetExceeded(Exception):
    """Raised inside an engine when the per-image time budget is spent."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def check(self, stage: str) -> None:
        if time.monotonic() > self.end:
            raise OcrBudgetExceeded(f"ocr_timeout: over the {self.seconds:g} s budget at {stage}")


def reading_order(lines: list[OcrLine]) -> list[OcrLine]:
    """Top to bottom; lines whose vertical centres are within half a line height read left to right."""
    if not lines:
        return lines

    def top(ln: OcrLine) -> float:
        return min(p[1] for p in ln.box)

    def height(ln: OcrLine) -> float:
        ys = [p[1] for p in ln.box]
        return max(ys) - min(ys)

    rows: list[list[OcrLine]] = []
    for ln in sorted(lines, key=top):
        cy = top(ln) + height(ln) / 2
        if rows:
            ref = rows[-1][0]
            if abs(cy - (top(ref) + height(ref) / 2)) <= max(height(ref), height(ln)) / 2:
                rows[-1].append(ln)
                continue
        rows.append([ln])
    return [ln for row in rows for ln in sorted(row, key=lambda x: min(p[0] for p in x.box))]


def valid_box(box: np.ndarray, width: int, height: int, min_side: float) -> bool:
    """A finite 4-point box inside the image with both sides at least ``min_side`` pixels."""
    if box.shape != (4, 2) or not np.isfinite(box).all():
        return False
    if (
        (box[:, 0] < -1).any()
        or (box[:, 1] < -1).any()
        or (box[:, 0] > width + 1).any()
        or (box[:, 1] > height + 1).any()
    ):
        return False
    w = float(np.linalg.norm(box[1] - box[0]))
    h = float(np.linalg.norm(box[3] - box[0]))
    return w >= min_side and h >= min_side


def tiles(width: int, height: int, limits: OcrLimits, aspect: float = 4.0) -> list[tuple[int, int, int, int]]:
    """Crops (x0, y0, x1, y1) that cover an image whose long side is over ``aspect`` times its short
    side, overlapping by 10 %: tiles about ``aspect``:1, or longer ones when more than ``max_tiles``
    would be needed (the detector then sees each at a smaller scale); otherwise the whole image."""
    long_, short = max(width, height), min(width, height)
    if short == 0 or long_ <= aspect * short:
        return [(0, 0, width, height)]
    n = min(limits.max_tiles, 1 + math.ceil((long_ - aspect * short) / (0.9 * aspect * short)))
    span = max(int(aspect * short), math.ceil(long_ / (1 + 0.9 * (n - 1))))
    step = int(0.9 * span)
    out = []
    for i in range(n):
        a = min(i * step, long_ - span)
        out.append((a, 0, a + span, height) if width >= height else (0, a, width, a + span))
    return out


class OcrEngine(ABC):
    """One OCR engine. ``name`` is stored with each record (``ocr_engine``: name and version)."""

    family: str

    @property
    @abstractmethod
    def name(self) -> str:
        """Engine, models and version, e.g. ``rapidocr-onnxruntime 1.4.4 PP-OCRv4``."""

    @abstractmethod
    def _read(self, rgb: np.ndarray, limits: OcrLimits, deadline: Deadline) -> tuple[list[OcrLine], str | None]:
        """Lines in original pixel coordinates, and an error for a bound hit part-way (or None)."""

    def read(self, rgb: np.ndarray, limits: OcrLimits | None = None) -> OcrResult:
        """OCR one image; never raises for the image's content (the error is in the result)."""
        limits = limits or OcrLimits()
        t0 = time.perf_counter()
        deadline = Deadline(limits.time_budget_s)
        try:
            rgb = _checked(rgb)
            lines, error = self._read(rgb, limits, deadline)
        except OcrBudgetExceeded as exc:
            lines, error = [], str(exc)
        except (ValueError, RuntimeError, MemoryError, IndexError) as exc:
            lines, error = [], f"ocr_failed: {type(exc).__name__}: {exc}"[:300]
        return OcrResult(self.name, reading_order(lines), error, seconds=time.perf_counter() - t0)


def _checked(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("OCR needs an (H, W, 3) uint8 RGB array")
    if min(rgb.shape[:2]) < 1:
        raise ValueError("empty image")
    return rgb


def downscale(rgb: np.ndarray, max_pixels: int) -> tuple[np.ndarray, float]:
    """``rgb`` scaled down to at most ``max_pixels`` (and the scale applied)."""
    h, w = rgb.shape[:2]
    if h * w <= max_pixels:
        return rgb, 1.0
    from PIL import Image

    s = (max_pixels / (h * w)) ** 0.5
    nw, nh = max(1, int(w * s)), max(1, int(h * s))
    return np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BILINEAR)), nw / w
