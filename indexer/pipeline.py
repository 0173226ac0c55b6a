"""The local indexing pipeline: reader → hash/dedup → decode+preprocess → model → writer.

Reading, hashing, decoding and preprocessing run in a thread pool (Pillow and numpy release
the GIL), bounded to a few batches ahead of the model. The model runs batched in the calling
thread. The writer commits a Parquet shard every ``shard_size`` records; a commit is atomic,
so a killed job loses at most the uncommitted tail, which a re-run redoes (dedup by sha256).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blipsearch.errors import ImageDecodeError
from indexer.decode import decode_image, read_file
from indexer.stages import StageTimer
from models.base import Embedder
from models.captioner import Captioner, Decoding
from storage.collection import Collection

log = logging.getLogger(__name__)
FEATURE_SHARD_ROWS = 256


@dataclass
class Prepared:
    """One input after the CPU stages: a failure, a duplicate, or pixels ready for the model."""

    path: Path
    sha256: str | None = None
    error: str | None = None
    reason: str | None = None  # ImageDecodeError.reason, or "unexpected"
    duplicate: bool = False
    pixels: np.ndarray | None = None
    caption_pixels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class IndexReport:
    collection: str
    added: int = 0
    skipped_duplicates: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    new_ids: list[int] = field(default_factory=list)
    timings: dict[str, object] = field(default_factory=dict)
    job_id: str | None = None
    ids_by_path: dict[str, int] = field(default_factory=dict)  # filled when the pipeline tracks paths

    @property
    def total(self) -> int:
        return self.added + self.skipped_duplicates + self.failed


class IndexPipeline:
    def __init__(
        self,
        collection: Collection,
        embedder: Embedder,
        *,
        batch_size: int = 32,
        shard_size: int = 4096,
        workers: int = 4,
        max_pixels: int = 100_000_000,
        max_bytes: int = 256 * 1024 * 1024,
        on_progress: Callable[[IndexReport, int], None] | None = None,
        captioner: Captioner | None = None,
        decoding: Decoding | None = None,
        track_paths: bool = False,
        jpeg_draft: bool = True,
    ) -> None:
        self.coll = collection
        self.embedder = embedder
        self.batch_size = batch_size
        self.shard_size = shard_size
        self.workers = workers
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.on_progress = on_progress
        self.captioner = captioner
        self.decoding = decoding or Decoding()
        self.track_paths = track_paths
        # JPEG draft decoding at the model's input size (the captioner's, if it is larger).
        sides = [s for s in (embedder.input_size, captioner.input_size if captioner else None) if s]
        self.draft: int | None = max(sides) if jpeg_draft and sides else None
        self.timer = StageTimer()

    # -- CPU stages (worker threads) --------------------------------------------------------
    def _prepare(self, path: Path, known: set[str]) -> Prepared:
        try:
            with self.timer.time("read"):
                raw = read_file(path, self.max_bytes)
            if raw.sha256 in known:
                return Prepared(path, raw.sha256, duplicate=True)
            with self.timer.time("decode"):
                img = decode_image(raw.data, self.max_pixels, self.draft)
                pixels = self.embedder.preprocess([img.image])[0]
                cap_px = self.captioner.preprocess([img.image])[0] if self.captioner else None
            meta = {"width": img.width, "height": img.height, "format": img.format, "bytes": len(raw.data)}
            return Prepared(path, raw.sha256, pixels=pixels, caption_pixels=cap_px, meta=meta)
        except ImageDecodeError as exc:
            return Prepared(path, error=str(exc), reason=exc.reason)
        except Exception as exc:
            log.exception("unexpected error preparing %s", path)
            return Prepared(path, error=f"unexpected {type(exc).__name__}: {exc}", reason="unexpected")

    def _prepared(self, paths: Iterable[Path], known: set[str]) -> Iterator[Prepared]:
        ahead = max(2 * self.batch_size, 4 * self.workers)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="decode") as pool:
            pending: deque[Future[Prepared]] = deque()
            for path in paths:
                pending.append(pool.submit(self._prepare, path, known))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    # -- model + writer (calling thread) ----------------------------------------------------
    def run(self, paths: Iterable[Path]) -> IndexReport:
        report = IndexReport(self.coll.name)
        known = self.coll.known_hashes()
        batch: list[Prepared] = []
        rows: list[Prepared] = []
        embs: list[np.ndarray] = []
        feats: list[np.ndarray] = []
        cache_features = self.coll.manifest.itm_features is not None
        # Cached vision tokens are large (~0.9 MB per base-size image): commit smaller shards.
        shard_size = min(self.shard_size, FEATURE_SHARD_ROWS) if cache_features else self.shard_size
        seen_in_run: set[str] = set()
        done = 0

        def flush_batch() -> None:
            if batch:
                pixels = np.stack([p.pixels for p in batch])  # type: ignore[misc]
                with self.timer.time("model", len(batch)):
                    if cache_features:
                        emb, tokens = self.embedder.embed_pixels_with_tokens(pixels)
                        feats.append(tokens)
                    else:
                        emb = self.embedder.embed_pixels(pixels)
                    embs.append(emb)
                if self.captioner is not None:
                    with self.timer.time("caption", len(batch)):
                        texts = self.captioner.caption_pixels(
                            np.stack([p.caption_pixels for p in batch]),  # type: ignore[misc]
                            self.decoding,
                        )
                    for p, text in zip(batch, texts, strict=True):
                        p.meta["caption"] = text
                        p.meta["caption_model"] = self.captioner.model_id
                rows.extend(batch)
                batch.clear()

        def commit() -> None:
            flush_batch()
            if not rows:
                return
            cols: dict[str, list[Any]] = {
                "uri": [str(p.path) for p in rows],
                "sha256": [p.sha256 for p in rows],
                **{
                    k: [p.meta.get(k) for p in rows]
                    for k in ("width", "height", "format", "bytes", "caption", "caption_model")
                },
            }
            with self.timer.time("write", len(rows)):
                aligned = self.coll.append_aligned(cols, np.concatenate(embs), np.concatenate(feats) if feats else None)
            ids = [i for i in aligned if i is not None]
            report.added += len(ids)
            report.skipped_duplicates += len(aligned) - len(ids)
            report.new_ids.extend(ids)
            if self.track_paths:
                report.ids_by_path.update({str(p.path): i for p, i in zip(rows, aligned, strict=True) if i is not None})
            rows.clear()
            embs.clear()
            feats.clear()

        for item in self._prepared(paths, known):
            done += 1
            if item.error is not None:
                report.failed += 1
                report.failures.append({"path": str(item.path), "error": item.error, "reason": item.reason or "error"})
            elif item.duplicate or item.sha256 in seen_in_run:
                report.skipped_duplicates += 1
            else:
                seen_in_run.add(item.sha256)  # type: ignore[arg-type]
                batch.append(item)
                if len(batch) >= self.batch_size:
                    flush_batch()
                if len(rows) >= shard_size:
                    commit()
            if self.on_progress:
                self.on_progress(report, done)
        commit()
        if self.on_progress:
            self.on_progress(report, done)
        report.timings = self.timer.report()
        return report
