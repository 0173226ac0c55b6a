"""Run the stages on this machine: read threads, decode threads or processes, the model in
the calling thread, the shard writer (indexer/pipeline.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from indexer.decode_pool import resolve_mode
from indexer.ocr import OcrOptions, OcrStage
from indexer.pipeline import IndexPipeline, IndexReport
from indexer.runner import Executor, Progress
from indexer.sources.base import SourceItem
from indexer.stages import StageTimer
from models.base import Embedder
from models.captioner import Captioner, Decoding
from storage.collection import Collection


@dataclass
class LocalOptions:
    batch_size: int = 32
    shard_size: int = 4096
    workers: int = 4
    max_pixels: int = 100_000_000
    max_bytes: int = 256 * 1024 * 1024
    jpeg_draft: bool = True
    decode_mode: str = "auto"
    captioner: Captioner | None = None
    decoding: Decoding = field(default_factory=Decoding)
    ocr: OcrOptions | None = None  # read text in each new image (index --ocr, or the collection has OCR on)


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, options: LocalOptions) -> None:
        self.options = options
        self.timer = StageTimer()

    def describe(self) -> dict[str, Any]:
        return {"batch_size": self.options.batch_size, "shard_size": self.options.shard_size}

    def run(
        self, coll: Collection, embedder: Embedder, items: Iterable[SourceItem], on_progress: Progress
    ) -> IndexReport:
        o = self.options
        count = getattr(items, "count", None)
        total = count() if callable(count) else None
        ocr = OcrStage(o.ocr, timer=self.timer) if o.ocr is not None else None
        pipeline = IndexPipeline(
            coll,
            embedder,
            batch_size=o.batch_size,
            shard_size=o.shard_size,
            workers=o.workers,
            max_pixels=o.max_pixels,
            max_bytes=o.max_bytes,
            on_progress=on_progress,
            captioner=o.captioner,
            decoding=o.decoding,
            jpeg_draft=o.jpeg_draft,
            decode_mode=resolve_mode(o.decode_mode, total),
            timer=self.timer,
            ocr=ocr,
        )
        try:
            return pipeline.run(items)
        finally:
            if ocr is not None:
                ocr.close()
