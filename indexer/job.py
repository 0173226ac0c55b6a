"""An indexing job: resolve the model and collection, run the pipeline, record it in the catalog."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from blipsearch.config import Settings
from blipsearch.errors import CancelledError
from indexer.control import JobWatch, recorded
from indexer.decode_pool import resolve_mode
from indexer.pipeline import IndexPipeline, IndexReport
from indexer.sources import open_sources
from models.base import Embedder
from models.captioner import Captioner, Decoding
from search import index_store
from search.service import load_model
from storage.catalog import open_catalog, utcnow
from storage.collection import Collection

log = logging.getLogger(__name__)
MAX_STORED_FAILURES = 10_000
RESUMABLE = ("pending", "running", "failed", "cancelled")  # a killed job is left "running"


def model_for_collection(settings: Settings, name: str, model: str | None) -> str:
    """The explicit ``--model``, else the existing collection's model, else the default."""
    if model:
        return model
    if Collection.exists(settings.data_dir, name):
        return Collection.open(settings.data_dir, name).manifest.model_id
    return settings.model


def create_image_collection(
    settings: Settings, name: str, embedder: Embedder, cache_itm_features: bool = False
) -> Collection:
    """Create (or open, if it exists for the same model) an image collection and register it
    in the catalog."""
    features = {"dtype": "float16", "note": "vision-encoder tokens for ITM re-ranking"} if cache_itm_features else None
    coll = Collection.create(settings.data_dir, name, model=embedder.describe(), itm_features=features)
    open_catalog(settings.catalog_url()).upsert_collection(coll.name, "images", embedder.describe())
    return coll


def index_paths(
    settings: Settings,
    paths: Sequence[str | Path],
    collection: str,
    *,
    model: str | None = None,
    embedder: Embedder | None = None,
    progress: bool = True,
    cache_itm_features: bool = False,
    captioner: Captioner | None = None,
    decoding: Decoding | None = None,
    job_id: str | None = None,
    input_format: str = "auto",
    path_column: str | None = None,
    metadata_columns: Sequence[str] | None = None,
    index_spec: str | None = None,
    roots: Sequence[Path] | None = None,
) -> IndexReport:
    """Index images into ``collection`` as a catalog job (``job_id``: an existing one to run
    or resume). ``paths``: folders, files, globs, file lists, manifests, tar shards
    (indexer/sources/). Cancellable through the catalog (indexer/control.py); every committed
    shard is kept whatever happens, and a re-run skips what is already committed."""
    sources = open_sources(paths, input_format, path_column=path_column, metadata_columns=metadata_columns, roots=roots)
    total = sources.count()  # None when unknown (compressed tar shards)
    if embedder is None:
        embedder = load_model(settings, model_for_collection(settings, collection, model))
    coll = create_image_collection(settings, collection, embedder, cache_itm_features)
    catalog = open_catalog(settings.catalog_url())
    job_settings = {
        "paths": [str(p) for p in paths],
        "batch_size": settings.batch_size,
        "shard_size": settings.shard_size,
        "cache_itm_features": cache_itm_features,
        "input_format": input_format,
        "path_column": path_column,
        "metadata_columns": list(metadata_columns) if metadata_columns is not None else None,
        "index_spec": index_spec,
    }
    if job_id is None:
        job_id = catalog.create_job("index", coll.name, embedder.model_id, job_settings)
    elif not catalog.transition(job_id, RESUMABLE, "running", started_at=utcnow(), finished_at=None, error=None):
        catalog.update_job(job_id, state="cancelled", finished_at=utcnow())
        raise CancelledError(f"Job {job_id} was cancelled before it started.")
    watch = JobWatch(catalog, job_id, total=total)
    bar = tqdm(total=total, unit="img", desc=f"index {coll.name}", disable=not progress or None, dynamic_ncols=True)

    def on_progress(report: IndexReport, done: int) -> None:
        bar.update(done - bar.n)
        bar.set_postfix(added=report.added, dup=report.skipped_duplicates, failed=report.failed, refresh=False)
        watch.tick(job_counts(report, total), done, timings=pipeline.timer.report)

    pipeline = IndexPipeline(
        coll,
        embedder,
        batch_size=settings.batch_size,
        shard_size=settings.shard_size,
        workers=settings.decode_workers,
        max_pixels=settings.max_image_pixels,
        max_bytes=settings.max_file_bytes,
        on_progress=on_progress,
        captioner=captioner,
        decoding=decoding,
        jpeg_draft=settings.decode_draft(),
        decode_mode=resolve_mode(settings.decode_mode, total),
    )
    with bar, recorded(catalog, job_id, lambda: {"timings": pipeline.timer.report()}):
        report = pipeline.run(sources)
        with pipeline.timer.time("index"):
            index_store.refresh(coll, spec=index_spec)
        report.timings = pipeline.timer.report()
    done = report.total
    catalog.update_job(
        job_id,
        state="succeeded",
        finished_at=utcnow(),
        counts={**job_counts(report, total), "progress": {"done": done, "total": done}},
        failures=report.failures[:MAX_STORED_FAILURES],
        timings=report.timings,
    )
    for f in report.failures:
        log.info("skipped %s: %s", f["path"], f["error"])
    report.job_id = job_id
    return report


def job_counts(report: IndexReport, files: int | None) -> dict[str, Any]:
    by_reason: dict[str, int] = {}
    for f in report.failures:
        by_reason[f["reason"]] = by_reason.get(f["reason"], 0) + 1
    return {
        "added": report.added,
        "skipped_duplicates": report.skipped_duplicates,
        "failed": report.failed,
        "failed_by_reason": by_reason,
        "updated": report.updated,
        "removed_stale": report.removed_stale,
        "total": report.total,
        "files": files,
    }
