"""The OCR stage: text read from images at index time, in its own worker pool, and its backfill.

``OcrStage`` runs the text-presence gate and then the engine (models/ocr/) in a thread pool of
``ocr_workers`` threads, each engine session limited to ``ocr_threads`` ONNX Runtime threads, so
OCR has a fixed CPU budget next to the embedder. ``submit`` blocks once ``2 × workers`` images are
in flight: the stages feeding it slow down instead of holding decoded images in memory.

``ocr_collection`` is the backfill of an existing collection (``blipsearch ocr --collection``):
a catalog job of kind ``ocr`` (``jobs list``), resumable and idempotent like captioning. It reads
only records without OCR from this engine, shard by shard, and commits every ``commit_every``
records by rewriting the shard's OCR columns (Collection.update_columns). A killed run keeps
what it committed; a re-run does the rest; a run with nothing to do does nothing. It also turns
OCR on for the collection, so records added later get it too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from blipsearch.config import Settings
from blipsearch.errors import InvalidInputError
from blipsearch.limits import MAX_IMAGE_PIXELS, OCR_GATE_THRESHOLD, OCR_MIN_CONFIDENCE, OCR_REC_BATCH
from indexer.stages import StageTimer
from media.stored import READ_ERRORS, ImageLimits, StoredImages
from models.ocr.base import OcrEngine, OcrLimits, OcrResult
from models.ocr.gate import text_presence
from storage.catalog import Catalog
from storage.collection import Collection
from storage.job_run import JobRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OcrOptions:
    engine: str = "rapidocr"
    min_confidence: float = OCR_MIN_CONFIDENCE
    limits: OcrLimits = field(default_factory=OcrLimits)
    gate: bool = True
    gate_threshold: float = OCR_GATE_THRESHOLD
    workers: int = 1
    threads: int = 1
    rec_batch: int = OCR_REC_BATCH

    @classmethod
    def from_settings(cls, s: Settings, engine: str | None = None) -> OcrOptions:
        return cls(
            engine=engine or s.ocr_engine,
            min_confidence=s.ocr_min_confidence,
            limits=OcrLimits(
                max_pixels=s.ocr_max_pixels,
                max_side=s.ocr_max_side,
                max_regions=s.ocr_max_regions,
                time_budget_s=s.ocr_time_budget_s,
            ),
            gate=s.ocr_gate,
            gate_threshold=s.ocr_gate_threshold,
            workers=s.ocr_workers,
            threads=s.ocr_threads,
            rec_batch=s.ocr_rec_batch,
        )

    @classmethod
    def for_collection(cls, s: Settings, entry: dict[str, Any]) -> OcrOptions:
        """The options of a collection with OCR on (its manifest's engine and threshold)."""
        base = cls.from_settings(s, engine=str(entry.get("engine") or s.ocr_engine))
        conf = entry.get("min_confidence")
        return replace(base, min_confidence=float(conf)) if isinstance(conf, int | float) else base

    def manifest_entry(self) -> dict[str, Any]:
        """What the collection manifest records: OCR is on, with this engine and threshold."""
        return {"engine": self.engine, "min_confidence": self.min_confidence}


@lru_cache(maxsize=4)
def load_engine(name: str, threads: int, rec_batch: int) -> OcrEngine:
    """One engine per (name, threads, batch) in this process: its models load once."""
    from models.ocr.registry import load_ocr_engine

    return load_ocr_engine(name, threads=threads, rec_batch=rec_batch)


class OcrStage:
    def __init__(self, options: OcrOptions, engine: OcrEngine | None = None, timer: StageTimer | None = None) -> None:
        self.options = options
        self.engine = engine or load_engine(options.engine, options.threads, options.rec_batch)
        self.timer = timer or StageTimer()
        self._pool = ThreadPoolExecutor(options.workers, thread_name_prefix="ocr")
        self._slots = threading.BoundedSemaphore(2 * options.workers)

    @property
    def name(self) -> str:
        return self.engine.name

    def run(self, rgb: np.ndarray, size: tuple[int, int] | None = None) -> OcrResult:
        """Gate, then OCR one image (never raises for the image's content). ``size``: the original
        image's (width, height) when ``rgb`` is a reduced copy; boxes are returned in its pixels."""
        if self.options.gate:
            with self.timer.time("ocr_gate"):
                score = text_presence(rgb)
            if score < self.options.gate_threshold:
                return OcrResult(self.engine.name, gated=True)
        with self.timer.time("ocr"):
            res = self.engine.read(rgb, self.options.limits)
        h, w = rgb.shape[:2]
        return res.rescaled(w, h, *size) if size else res

    def submit(self, rgb: np.ndarray, size: tuple[int, int] | None = None) -> Future[OcrResult]:
        self._slots.acquire()
        try:
            fut = self._pool.submit(self.run, rgb, size)
        except BaseException:
            self._slots.release()
            raise
        fut.add_done_callback(lambda _: self._slots.release())
        return fut

    def columns(self, result: OcrResult) -> dict[str, Any]:
        return result.columns(self.options.min_confidence)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def image_array(img: Any, max_pixels: int) -> np.ndarray:
    """A decoded PIL image as the (H, W, 3) uint8 array OCR reads, downscaled to ``max_pixels``."""
    from models.ocr.base import downscale

    arr = np.asarray(img.convert("RGB") if img.mode != "RGB" else img)
    return downscale(arr, max_pixels)[0]


def _pending(coll: Collection, engine: str) -> Iterator[tuple[str, list[tuple[int, str, str]]]]:
    for shard in coll.manifest.shards:
        path = coll.shard_path(shard)
        names = pq.read_schema(path).names
        cols = ["id", "uri", "sha256"] + (["ocr_engine"] if "ocr_engine" in names else [])
        rows = pq.read_table(path, columns=cols).to_pylist()
        todo = [
            (r["id"], r["uri"], r["sha256"])
            for r in rows
            if r.get("ocr_engine") != engine and not shard.is_deleted(r["id"])
        ]
        if todo:
            yield shard.file, todo


def ocr_collection(
    coll: Collection,
    stage: OcrStage,
    catalog: Catalog | None = None,
    *,
    commit_every: int = 32,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_bytes: int = 256 * 1024 * 1024,
    read_threads: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """OCR every record of ``coll`` that has no OCR from this engine (see the module docstring)."""
    if coll.manifest.kind != "images":
        raise InvalidInputError(f"{coll.name!r} is a text collection; only image collections get OCR.")
    coll.set_ocr(stage.options.manifest_entry())
    work = list(_pending(coll, stage.name))
    total = sum(len(t) for _, t in work)
    report: dict[str, Any] = {
        "collection": coll.name,
        "ocr_engine": stage.name,
        "read": 0,
        "with_text": 0,
        "gated": 0,
        "failed": 0,
        "failures": [],
        "total": total,
    }
    job = None
    if catalog is not None:
        settings = {"min_confidence": stage.options.min_confidence, "gate": stage.options.gate}
        job = JobRun.start(catalog, "ocr", coll.name, stage.name, settings, total=total)
        report["job_id"] = job.job_id
    reader = StoredImages(coll.uri_aliases(), ImageLimits(max_pixels=max_pixels, max_bytes=max_bytes))

    def load(item: tuple[int, str, str]) -> tuple[int, Any]:
        rid, uri, sha = item
        try:
            dec = reader.decode(reader.read(uri, sha))
            return rid, (image_array(dec.image, stage.options.limits.max_pixels), (dec.width, dec.height))
        except READ_ERRORS as exc:
            return rid, exc

    def counts() -> dict[str, Any]:
        return {k: report[k] for k in ("read", "with_text", "gated", "failed")}

    done = 0
    with (
        job.recorded(lambda: {"counts": counts()}) if job is not None else nullcontext(),
        tqdm(total=total, unit="img", desc=f"ocr {coll.name}", disable=not progress or None) as bar,
        ThreadPoolExecutor(read_threads, thread_name_prefix="ocr-read") as pool,
    ):
        for shard_file, todo in work:
            for start in range(0, len(todo), commit_every):
                chunk = todo[start : start + commit_every]
                futures: list[tuple[int, Future[OcrResult] | Exception]] = []
                for rid, arr in pool.map(load, chunk):
                    futures.append((rid, arr if isinstance(arr, Exception) else stage.submit(*arr)))
                updates: dict[int, dict[str, Any]] = {}
                for rid, fut in futures:
                    if isinstance(fut, Exception):
                        report["failed"] += 1
                        report["failures"].append({"id": rid, "error": str(fut), "reason": "unreadable"})
                        continue
                    res = fut.result()
                    updates[rid] = stage.columns(res)
                    report["read"] += 1
                    report["gated"] += int(res.gated)
                    report["with_text"] += int(bool(res.lines))
                    if res.error:
                        report["failed"] += 1
                        report["failures"].append({"id": rid, "error": res.error, "reason": res.reason})
                coll.update_columns(shard_file, updates)
                done += len(chunk)
                bar.update(len(chunk))
                if job is not None:
                    job.progress(counts(), done)
    if job is not None:
        job.succeed(counts(), done=done, failures=[{"path": str(f["id"]), **f} for f in report["failures"]])
    return report
