"""``sync`` and ``watch`` from settings: the model, the indexing pipeline for new and changed
files, and the catalog job each sync run is recorded as (indexer/sync.py, indexer/watch.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from blipsearch.config import Settings
from indexer.commit import IndexReport
from indexer.ocr import OcrStage
from indexer.options import IndexOptions
from indexer.pipeline import IndexPipeline
from indexer.sources.base import SourceItem
from indexer.sync import SyncReport, check_folders, sync_folders
from models.base import Embedder
from search.index_store import IndexPolicy
from service.indexing import collection_model, new_image_collection, ocr_options
from service.models import load_model
from storage.catalog import open_catalog
from storage.collection import Collection
from storage.job_run import JobRun


def _index_run(
    settings: Settings, embedder: Embedder, collection: str
) -> Callable[[Collection, list[SourceItem]], IndexReport]:
    options = IndexOptions.from_settings(settings)
    ocr = ocr_options(settings, collection, False)

    def run(coll: Collection, items: list[SourceItem]) -> IndexReport:
        stage = OcrStage(ocr) if ocr is not None else None
        try:
            pipeline = IndexPipeline(
                coll, embedder, options, expected=len(items), track_paths=True, update_changed=True, ocr=stage
            )
            return pipeline.run(items)
        finally:
            if stage is not None:
                stage.close()

    return run


class Syncer:
    """Sync runs of one collection with one loaded model (``watch`` runs many)."""

    def __init__(
        self,
        settings: Settings,
        paths: Sequence[str | Path],
        collection: str,
        *,
        model: str | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings
        self.folders = check_folders(paths)  # fails fast, before the model loads
        self.embedder = embedder or load_model(settings, collection_model(settings, collection, model))
        self.coll = new_image_collection(settings, collection, self.embedder)
        self._run = _index_run(settings, self.embedder, self.coll.name)
        self.policy = IndexPolicy.from_settings(settings)

    def once(self, *, settle_s: float = 0.0, job_id: str | None = None) -> SyncReport:
        """One sync run, recorded as a catalog job of kind ``sync``."""
        catalog = open_catalog(self.settings.catalog_url())
        job = JobRun.start_or_resume(
            catalog,
            job_id,
            "sync",
            self.coll.name,
            self.embedder.model_id,
            {"paths": [str(p) for p in self.folders], "settle_s": settle_s},
        )
        with job.recorded():
            report = sync_folders(
                self.coll,
                self.folders,
                self._run,
                settle_s=settle_s,
                policy=self.policy,
                exclude=[self.settings.data_dir],
            )
        counts = {k: v for k, v in report.as_dict().items() if isinstance(v, int | float)}
        job.succeed(counts, done=report.files, failures=report.failures)
        return report


def sync_paths(
    settings: Settings,
    paths: Sequence[str | Path],
    collection: str,
    *,
    model: str | None = None,
    embedder: Embedder | None = None,
    job_id: str | None = None,
) -> dict[str, Any]:
    syncer = Syncer(settings, paths, collection, model=model, embedder=embedder)
    report = syncer.once(job_id=job_id)
    syncer.coll.reload()
    return {**report.as_dict(), "collection_size": syncer.coll.manifest.count}
