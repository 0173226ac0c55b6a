"""RapidOCR on ONNX Runtime: PP-OCRv4 detection and recognition (Chinese + English), the default.

The ``rapidocr-onnxruntime`` wheel ships the ONNX models, so nothing is downloaded. This module
drives RapidOCR's detector and recogniser itself rather than its one-call pipeline, to bound
the work per image (``OcrLimits``): panoramas are tiled, degenerate boxes dropped, at most
``max_regions`` regions (the largest) are recognised, in batches of ``rec_batch`` crops, with
the time budget checked between batches. The angle classifier is not run (text rotated by
180° is rare in photos and screenshots; small rotations are handled by the detector's boxes).
"""

from __future__ import annotations

import threading
from importlib import metadata
from typing import Any

import numpy as np

from blipsearch.errors import MissingDependencyError
from models.ocr.base import Deadline, OcrBudgetExceeded, OcrEngine, OcrLimits, OcrLine, downscale, tiles, valid_box

PACKAGE = "rapidocr-onnxruntime"


def _rapidocr() -> Any:
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:
        raise MissingDependencyError("OCR (the RapidOCR engine)", PACKAGE, "ocr") from exc
    return RapidOCR


class RapidOcrEngine(OcrEngine):
    family = "rapidocr"

    def __init__(self, threads: int = 1, rec_batch: int = 16) -> None:
        cls = _rapidocr()
        self.threads = max(1, threads)
        self.rec_batch = max(1, rec_batch)
        self._cls = cls
        # RapidOCR's detector keeps per-call state, so concurrent reads each take an instance from
        # this free list (made on demand, kept for reuse: as many as reads ever ran at once).
        self._free: list[Any] = []
        self._lock = threading.Lock()
        self._version = metadata.version(PACKAGE)
        self._free.append(self._new())  # load once here so a broken install fails at start, not per image

    def _new(self) -> Any:
        eng = self._cls(
            intra_op_num_threads=self.threads,
            inter_op_num_threads=1,
            rec_batch_num=self.rec_batch,
            print_verbose=False,
        )
        # "max": the detector sees the image at its own size, at most 960-2000 px a side (by size),
        # never upscaled; "min" (the package default) upscales the short side to 736 px, which
        # costs several times more on wide images and tiles.
        eng.text_det.limit_type = "max"
        return eng

    def _acquire(self) -> Any:
        with self._lock:
            if self._free:
                return self._free.pop()
        return self._new()

    def _release(self, eng: Any) -> None:
        with self._lock:
            self._free.append(eng)

    @property
    def name(self) -> str:
        return f"rapidocr-onnxruntime {self._version} PP-OCRv4"

    def _read(self, rgb: np.ndarray, limits: OcrLimits, deadline: Deadline) -> tuple[list[OcrLine], str | None]:
        eng = self._acquire()
        try:
            return self._read_with(eng, rgb, limits, deadline)
        finally:
            self._release(eng)

    def _read_with(
        self, eng: Any, rgb: np.ndarray, limits: OcrLimits, deadline: Deadline
    ) -> tuple[list[OcrLine], str | None]:
        eng.max_side_len = limits.max_side
        small, scale = downscale(rgb, limits.max_pixels)
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        h, w = bgr.shape[:2]
        boxes: list[np.ndarray] = []
        for x0, y0, x1, y1 in tiles(w, h, limits):
            deadline.check("detection")
            tile = bgr[y0:y1, x0:x1]
            for b in self._detect(eng, tile):
                boxes.append(b + np.array([x0, y0], np.float32))
        boxes = _dedupe([b for b in boxes if valid_box(b, w, h, limits.min_box_side)])
        error = None
        if len(boxes) > limits.max_regions:
            error = f"ocr_too_many_regions: {len(boxes)} text regions, read the {limits.max_regions} largest"
            boxes.sort(key=_area, reverse=True)
            boxes = boxes[: limits.max_regions]
        lines: list[OcrLine] = []
        if not boxes:
            return lines, error
        # Long lines are cut into pieces of at most MAX_RATIO:1 (at the emptiest column), so a
        # recognition batch never pads to a very wide input; a line's pieces are joined again.
        pieces: list[tuple[int, np.ndarray]] = []
        for i, crop in enumerate(eng.get_crop_img_list(bgr, boxes)):
            pieces += [(i, p) for p in split_long(crop)]
        texts: dict[int, list[tuple[str, float]]] = {}
        for start in range(0, len(pieces), self.rec_batch):
            try:
                deadline.check("recognition")
            except OcrBudgetExceeded as exc:  # keep what was read: the lines recognised so far
                stop = f"{exc}, after {start} of {len(pieces)} text pieces"
                error = f"{error}; {stop}" if error else stop
                break
            part = pieces[start : start + self.rec_batch]
            res, _ = eng.text_rec([p for _, p in part])
            for (i, _), (txt, score) in zip(part, res, strict=True):
                texts.setdefault(i, []).append((str(txt).strip(), float(score)))
        for i, box in enumerate(boxes):
            got = [(t, s) for t, s in texts.get(i, []) if t]
            if got:
                pts = (box / scale).astype(float).tolist()
                conf = min(s for _, s in got)
                lines.append(OcrLine(" ".join(t for t, _ in got), pts, round(conf, 4)))
        return lines, error

    @staticmethod
    def _detect(eng: Any, bgr: np.ndarray) -> list[np.ndarray]:
        raw_h, raw_w = bgr.shape[:2]
        img, ratio_h, ratio_w = eng.preprocess(bgr)
        record: dict[str, Any] = {"preprocess": {"ratio_h": ratio_h, "ratio_w": ratio_w}}
        img, record = eng.maybe_add_letterbox(img, record)
        dt, _ = eng.auto_text_det(img)
        if dt is None or len(dt) == 0:
            return []
        pts = eng._get_origin_points(dt, record, raw_h, raw_w)
        return [np.asarray(p, np.float32) for p in pts]


MAX_RATIO = 12


def split_long(crop: np.ndarray) -> list[np.ndarray]:
    """``crop`` cut into pieces at most ``MAX_RATIO`` times as wide as high, each cut at the
    column with the least contrast in the last quarter of its window (a gap between glyphs)."""
    h, w = crop.shape[:2]
    span = MAX_RATIO * max(1, h)
    if w <= span:
        return [crop]
    contrast = crop.astype(np.float32).std(axis=(0, 2)) if crop.ndim == 3 else crop.astype(np.float32).std(axis=0)
    out, a = [], 0
    while w - a > span:
        lo = a + int(span * 0.75)
        cut = lo + int(np.argmin(contrast[lo : a + span]))
        out.append(crop[:, a:cut])
        a = cut
    out.append(crop[:, a:])
    return [p for p in out if p.shape[1] >= 2]


def _area(b: np.ndarray) -> float:
    x, y = b[:, 0], b[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _dedupe(boxes: list[np.ndarray]) -> list[np.ndarray]:
    """Drop boxes found twice in the overlap of two tiles (axis-aligned IoU over 0.5)."""
    kept: list[np.ndarray] = []
    rects: list[tuple[float, float, float, float]] = []
    for b in boxes:
        r = (float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 0].max()), float(b[:, 1].max()))
        if any(_iou(r, o) > 0.5 for o in rects[-64:]):
            continue
        kept.append(b)
        rects.append(r)
    return kept


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
