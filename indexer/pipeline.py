"""The local indexing pipeline: reader → read/hash/dedup → decode+preprocess → model → writer.

* **reader**: a ``Source`` (indexer/sources/) yields items: files, list/manifest rows, tar members.
* **read/hash**: a thread pool reads bytes and hashes them; already-committed content is
  skipped before decoding (re-runs are cheap).
* **decode**: ``DecodeStage`` (indexer/decode_pool.py), in worker processes for bulk jobs or
  in the read threads for small inputs; bounded to a few batches ahead of the model.
* **model**: batched in the calling thread.
* **writer**: commits a Parquet shard every ``shard_size`` records; a commit is atomic, so a
  killed job loses at most the uncommitted tail, which a re-run redoes (dedup by sha256).

Each stage is timed and the queue in front of the model is sampled (``timer.report()``), so a
job shows whether it is bound by I/O, decoding, the model or writes.

**Updates.** An item whose ``uri`` is already in the collection with different content is
re-embedded, and the old record is tombstoned in the same commit that adds the new one.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blipsearch.errors import ImageDecodeError
from indexer.decode_pool import DecodeConfig, DecodeStage
from indexer.sources.base import SourceItem
from indexer.stages import StageTimer
from indexer.updates import UriUpdates
from media.decode import read_source
from models.base import Embedder
from models.captioner import Captioner, Decoding
from storage.collection import Collection

log = logging.getLogger(__name__)
FEATURE_SHARD_ROWS = 256


@dataclass
class Prepared:
    """One input after the CPU stages: a failure, a duplicate, or pixels ready for the model."""

    uri: str
    sha256: str | None = None
    error: str | None = None
    reason: str | None = None  # ImageDecodeError.reason, or "unexpected"
    duplicate: bool = False
    pixels: np.ndarray | None = None
    caption_pixels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # the source's metadata, kept in the record
    replaces: tuple[int, str] | None = None  # (id, sha256) of the record this one updates


@dataclass
class IndexReport:
    collection: str
    added: int = 0
    skipped_duplicates: int = 0
    failed: int = 0
    updated: int = 0  # of ``added``: new content at a uri already indexed (old record tombstoned)
    removed_stale: int = 0  # records whose uri now holds content already indexed elsewhere
    failures: list[dict[str, str]] = field(default_factory=list)
    new_ids: list[int] = field(default_factory=list)
    timings: dict[str, object] = field(default_factory=dict)
    job_id: str | None = None
    ids_by_path: dict[str, int] = field(default_factory=dict)  # filled when the pipeline tracks paths

    @property
    def total(self) -> int:
        return self.added + self.skipped_duplicates + self.failed


def as_items(inputs: Iterable[SourceItem | Path]) -> Iterator[SourceItem]:
    for x in inputs:
        yield x if isinstance(x, SourceItem) else SourceItem(str(x), path=Path(x))


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
        decode_mode: str = "thread",
        update_changed: bool = True,
        timer: StageTimer | None = None,
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
        self.timer = timer or StageTimer()
        self.update_changed = update_changed
        self.decoder = DecodeStage(
            DecodeConfig(
                embedder.preprocessor(),
                captioner.preprocessor() if captioner else None,
                max_pixels,
                self.draft,
            ),
            mode=decode_mode,
            processes=workers,
        )
        # Read threads: enough to keep every decode process busy while others wait on I/O.
        self.read_threads = workers if decode_mode == "thread" else 2 * workers + 1

    # -- CPU stages (worker threads, and decode processes) ----------------------------------
    def _prepare(self, item: SourceItem, known: set[str]) -> Prepared:
        try:
            if item.error is not None:
                return Prepared(item.uri, error=item.error, reason="source_error", extra=item.meta)
            if item.sha256 is not None and item.sha256 in known:  # committed and unchanged: not read again
                return Prepared(item.uri, item.sha256, duplicate=True, extra=item.meta)
            with self.timer.time("read"):
                raw = read_source(item.uri, item.path, item.data, self.max_bytes)
            if raw.sha256 in known:
                return Prepared(item.uri, raw.sha256, duplicate=True, extra=item.meta)
            with self.timer.time("decode"):
                dec = self.decoder(raw.data)
            return Prepared(
                item.uri,
                raw.sha256,
                pixels=dec.pixels,
                caption_pixels=dec.caption_pixels,
                meta=dec.meta,
                extra=item.meta,
            )
        except ImageDecodeError as exc:
            return Prepared(item.uri, error=str(exc), reason=exc.reason, extra=item.meta)
        except Exception as exc:
            log.exception("unexpected error preparing %s", item.uri)
            return Prepared(item.uri, error=f"unexpected {type(exc).__name__}: {exc}", reason="unexpected")

    def _prepared(self, items: Iterable[SourceItem], known: set[str]) -> Iterator[Prepared]:
        ahead = max(2 * self.batch_size, 4 * self.read_threads)
        with ThreadPoolExecutor(self.read_threads, thread_name_prefix="read") as pool:
            pending: deque[Future[Prepared]] = deque()
            try:
                for item in items:
                    pending.append(pool.submit(self._prepare, item, known))
                    if len(pending) >= ahead:
                        yield self._next(pending, ahead)
                while pending:
                    yield self._next(pending, ahead)
            finally:
                for f in pending:
                    f.cancel()

    def _next(self, pending: deque[Future[Prepared]], ahead: int) -> Prepared:
        """The next item in order, sampling how many decoded items wait for the model."""
        self.timer.sample_queue("decoded_ahead_of_model", sum(1 for f in pending if f.done()), ahead)
        return pending.popleft().result()

    # -- model + writer (calling thread) ----------------------------------------------------
    def run(self, inputs: Iterable[SourceItem | Path]) -> IndexReport:
        try:
            return self._run(as_items(inputs))
        finally:
            self.decoder.close()

    def _run(self, items: Iterable[SourceItem]) -> IndexReport:
        report = IndexReport(self.coll.name)
        known = self.coll.known_hashes()
        updates = UriUpdates(self.coll.live_uris() if self.update_changed else {})
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
                    emb, tokens = self.embedder.embed_batch(pixels, with_tokens=cache_features)
                embs.append(emb)
                if tokens is not None:
                    feats.append(tokens)
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
            stale = updates.take_stale()
            if not rows and not stale:
                return
            cols: dict[str, list[Any]] = {
                "uri": [p.uri for p in rows],
                "sha256": [p.sha256 for p in rows],
                "metadata": [json.dumps(p.extra, sort_keys=True, default=str) if p.extra else None for p in rows],
                **{
                    k: [p.meta.get(k) for p in rows]
                    for k in ("width", "height", "format", "bytes", "caption", "caption_model")
                },
            }
            with self.timer.time("write", len(rows)):
                aligned = self.coll.append_aligned(
                    cols,
                    np.concatenate(embs) if embs else np.zeros((0, 0), np.float32),
                    np.concatenate(feats) if feats else None,
                    replaces=[p.replaces for p in rows],
                    tombstones=stale,
                )
            ids = [i for i in aligned if i is not None]
            report.added += len(ids)
            report.skipped_duplicates += len(aligned) - len(ids)
            report.updated += sum(1 for p, i in zip(rows, aligned, strict=True) if i is not None and p.replaces)
            report.removed_stale += len(stale)
            report.new_ids.extend(ids)
            if self.track_paths:
                report.ids_by_path.update({p.uri: i for p, i in zip(rows, aligned, strict=True) if i is not None})
            rows.clear()
            embs.clear()
            feats.clear()

        for item in self._prepared(items, known):
            done += 1
            if item.error is not None:
                report.failed += 1
                report.failures.append({"path": item.uri, "error": item.error, "reason": item.reason or "error"})
            elif item.duplicate or item.sha256 in seen_in_run:
                report.skipped_duplicates += 1
                updates.duplicate(item.uri, item.sha256)
            else:
                seen_in_run.add(item.sha256)  # type: ignore[arg-type]
                item.replaces = updates.new(item.uri, item.sha256)
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
