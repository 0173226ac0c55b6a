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
from typing import TYPE_CHECKING, Any

import numpy as np

from blipsearch.errors import ImageDecodeError
from indexer.commit import IndexReport, ShardCommitter
from indexer.decode_pool import DecodeConfig, Decoded, DecodeStage, resolve_mode
from indexer.options import IndexOptions
from indexer.sources.base import SourceItem
from indexer.stages import StageTimer
from indexer.updates import UriUpdates
from media.decode import read_source
from media.exif import CAPTURE_FIELDS
from media.pdq import available as pdq_available
from media.places import place_columns
from models.base import Embedder
from models.captioners import Captioner, Decoding
from models.ocr.base import OcrResult
from storage.collection import Collection
from storage.schema import OCR_FIELDS

if TYPE_CHECKING:
    from indexer.ocr import OcrStage

log = logging.getLogger(__name__)
FEATURE_SHARD_ROWS = 256
# the record columns the CPU stages fill (Prepared.meta)
RECORD_META = (
    "width",
    "height",
    "format",
    "bytes",
    "caption",
    "caption_model",
    "pdq_hash",
    "pdq_quality",
    *CAPTURE_FIELDS,
    "capture_notes",
)


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
    ocr: Future[OcrResult] | None = None  # text read from the image, running in the OCR stage's pool


def as_items(inputs: Iterable[SourceItem | Path]) -> Iterator[SourceItem]:
    for x in inputs:
        yield x if isinstance(x, SourceItem) else SourceItem(str(x), path=Path(x))


class IndexPipeline:
    """Runs one indexing pass on this machine: owns the read threads, the decode stage (threads
    or processes), the batched model (and captioner) calls in the calling thread, and the shard
    commits (indexer/commit.py) with the report they count into. ``options`` says how
    (batch and shard sizes, workers, limits, JPEG draft); ``expected``: how many items to expect,
    for ``decode_mode`` auto."""

    def __init__(
        self,
        collection: Collection,
        embedder: Embedder,
        options: IndexOptions = IndexOptions(),
        *,
        expected: int | None = None,
        on_progress: Callable[[IndexReport, int], None] | None = None,
        captioner: Captioner | None = None,
        decoding: Decoding | None = None,
        track_paths: bool = False,
        update_changed: bool = True,
        timer: StageTimer | None = None,
        ocr: OcrStage | None = None,
    ) -> None:
        self.coll = collection
        self.embedder = embedder
        self.options = options
        self.on_progress = on_progress
        self.captioner = captioner
        self.decoding = decoding or Decoding()
        self.track_paths = track_paths
        # JPEG draft decoding at the model's input size (the captioner's, if it is larger).
        sides = [s for s in (embedder.input_size, captioner.input_size if captioner else None) if s]
        if ocr is not None:  # small text needs pixels: OCR reads the same decode at half its side at least
            sides.append(ocr.options.limits.max_side // 2)
        self.draft: int | None = max(sides) if options.jpeg_draft and sides else None
        self.ocr = ocr
        self.timer = timer or StageTimer()
        self.update_changed = update_changed
        decode_mode = resolve_mode(options.decode_mode, expected)
        self.decoder = DecodeStage(
            DecodeConfig(
                embedder.preprocessor(),
                captioner.preprocessor() if captioner else None,
                options.max_pixels,
                self.draft,
                pdq=options.pdq and pdq_available(),  # hashes need the full decode: no JPEG draft then
                ocr_pixels=ocr.options.limits.max_pixels if ocr is not None else None,
                timeout_s=options.decode_timeout_s,
            ),
            mode=decode_mode,
            processes=options.workers,
        )
        # Read threads: enough to keep every decode process busy while others wait on I/O.
        self.read_threads = options.workers if decode_mode == "thread" else 2 * options.workers + 1

    # -- CPU stages (worker threads, and decode processes) ----------------------------------
    def _prepare(self, item: SourceItem, known: set[str]) -> Prepared:
        try:
            if item.error is not None:
                return Prepared(item.uri, error=item.error, reason=item.reason or "source_error", extra=item.meta)
            if item.sha256 is not None and item.sha256 in known:  # committed and unchanged: not read again
                return Prepared(item.uri, item.sha256, duplicate=True, extra=item.meta)
            with self.timer.time("read"):
                raw = read_source(item.uri, item.path, item.data, self.options.max_bytes)
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
                # OCR reads the same decoded image, in its own pool (blocks while that pool is full)
                ocr=self._ocr(dec),
            )
        except ImageDecodeError as exc:
            return Prepared(item.uri, error=str(exc), reason=exc.reason, extra=item.meta)
        except Exception as exc:
            log.exception("unexpected error preparing %s", item.uri)
            return Prepared(item.uri, error=f"unexpected {type(exc).__name__}: {exc}", reason="unexpected")

    def _prepared(self, items: Iterable[SourceItem], known: set[str]) -> Iterator[Prepared]:
        ahead = max(2 * self.options.batch_size, 4 * self.read_threads)
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

    def _ocr(self, dec: Decoded) -> Future[OcrResult] | None:
        if self.ocr is None or dec.ocr_image is None:
            return None
        return self.ocr.submit(dec.ocr_image, (dec.meta["width"], dec.meta["height"]))

    def _ocr_columns(self, rows: list[Prepared], report: IndexReport) -> dict[str, list[Any]]:
        assert self.ocr is not None
        out: dict[str, list[Any]] = {k: [] for k in OCR_FIELDS}
        with self.timer.time("ocr_wait", len(rows)):
            for p in rows:
                if p.ocr is None:
                    values: dict[str, Any] = dict.fromkeys(OCR_FIELDS)
                else:
                    try:
                        res = p.ocr.result()
                    except Exception as exc:  # the engine itself broke: the record is kept without OCR
                        log.exception("OCR failed on %s", p.uri)
                        res = OcrResult(self.ocr.name, error=f"ocr_failed: {type(exc).__name__}: {exc}")
                    values = self.ocr.columns(res)
                    if res.error:
                        report.ocr_failures.append({"path": p.uri, "error": res.error, "reason": res.reason or "error"})
                for k in OCR_FIELDS:
                    out[k].append(values[k])
        return out

    # -- model + writer (calling thread) ----------------------------------------------------
    def run(self, inputs: Iterable[SourceItem | Path]) -> IndexReport:
        try:
            return self._run(as_items(inputs))
        finally:
            self.decoder.close()

    def _run(self, items: Iterable[SourceItem]) -> IndexReport:
        report = IndexReport(self.coll.name)
        if self.ocr is not None:  # records added later (uploads, sync) get OCR too
            self.coll.set_ocr(self.ocr.options.manifest_entry())
        known = self.coll.known_hashes()
        updates = UriUpdates(self.coll.live_uris() if self.update_changed else {})
        writer = ShardCommitter(self.coll, report, updates, self.timer, track_paths=self.track_paths)
        batch: list[Prepared] = []
        rows: list[Prepared] = []
        embs: list[np.ndarray] = []
        feats: list[np.ndarray] = []
        cache_features = self.coll.manifest.itm_features is not None
        # Cached vision tokens are large (~0.9 MB per base-size image): commit smaller shards.
        shard_size = self.options.shard_size
        shard_size = min(shard_size, FEATURE_SHARD_ROWS) if cache_features else shard_size
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
            cols: dict[str, list[Any]] = {
                "uri": [p.uri for p in rows],
                "sha256": [p.sha256 for p in rows],
                "metadata": [json.dumps(p.extra, sort_keys=True, default=str) if p.extra else None for p in rows],
                **{k: [p.meta.get(k) for p in rows] for k in RECORD_META},
            }
            with self.timer.time("places", len(rows)):  # GPS -> place names, offline, one lookup per shard
                cols.update(place_columns(cols["gps_lat"], cols["gps_lon"]))
            if self.ocr is not None:
                cols.update(self._ocr_columns(rows, report))
            writer.commit(
                cols,
                np.concatenate(embs) if embs else np.zeros((0, 0), np.float32),
                np.concatenate(feats) if feats else None,
                replaces=[p.replaces for p in rows],
            )
            rows.clear()
            embs.clear()
            feats.clear()

        for item in self._prepared(items, known):
            done += 1
            if item.error is not None:
                writer.failed(item.uri, item.error, item.reason or "error")
            elif item.duplicate or item.sha256 in seen_in_run:
                writer.duplicate(item.uri, item.sha256)
            else:
                seen_in_run.add(item.sha256)  # type: ignore[arg-type]
                item.replaces = writer.new(item.uri, item.sha256)
                batch.append(item)
                if len(batch) >= self.options.batch_size:
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
