"""Run the stages on this machine: read threads, decode threads or processes, the model in
the calling thread, the shard writer (indexer/pipeline.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from indexer.commit import IndexReport
from indexer.ocr import OcrOptions, OcrStage
from indexer.options import IndexOptions
from indexer.pipeline import IndexPipeline
from indexer.runner import Executor, Progress
from indexer.sources.base import SourceItem
from indexer.sources.prefetch import prefetch_objects
from indexer.stages import StageTimer
from models.base import Embedder
from models.captioners import Captioner, Decoding
from storage.collection import Collection


class LocalExecutor(Executor):
    name = "local"

    def __init__(
        self,
        options: IndexOptions,
        captioner: Captioner | None = None,
        decoding: Decoding | None = None,
        ocr: OcrOptions | None = None,
    ) -> None:
        """``ocr``: read the text in each new image (index --ocr, or the collection has OCR on)."""
        self.options = options
        self.captioner = captioner
        self.decoding = decoding or Decoding()
        self.ocr = ocr
        self.timer = StageTimer()

    def describe(self) -> dict[str, Any]:
        return {"batch_size": self.options.batch_size, "shard_size": self.options.shard_size}

    def run(
        self, coll: Collection, embedder: Embedder, items: Iterable[SourceItem], on_progress: Progress
    ) -> IndexReport:
        count = getattr(items, "count", None)
        ocr = OcrStage(self.ocr, timer=self.timer) if self.ocr is not None else None
        pipeline = IndexPipeline(
            coll,
            embedder,
            self.options,
            expected=count() if callable(count) else None,
            on_progress=on_progress,
            captioner=self.captioner,
            decoding=self.decoding,
            timer=self.timer,
            ocr=ocr,
        )
        try:
            # objects are fetched ahead of the decoder, a bounded number at a time
            return pipeline.run(prefetch_objects(items, self.options.max_bytes))
        finally:
            if ocr is not None:
                ocr.close()
