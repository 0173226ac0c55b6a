"""An indexing job: resolve the model and collection, run the pipeline, record it in the catalog."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from blipsearch.config import Settings
from indexer.pipeline import IndexPipeline, IndexReport
from indexer.sources import iter_files
from models.base import Embedder
from models.captioner import Captioner, Decoding
from search import index_store
from search.service import load_model
from storage.catalog import open_catalog, utcnow
from storage.collection import Collection

log = logging.getLogger(__name__)
MAX_STORED_FAILURES = 10_000


def model_for_collection(settings: Settings, name: str, model: str | None) -> str:
    """The explicit ``--model``, else the existing collection's model, else the default."""
    if model:
        return model
    if Collection.exists(settings.data_dir, name):
        return Collection.open(settings.data_dir, name).manifest.model_id
    return settings.model


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
) -> IndexReport:
    files = list(iter_files(paths))  # fails fast on a missing input path
    if embedder is None:
        embedder = load_model(settings, model_for_collection(settings, collection, model))
    features = None
    if cache_itm_features:
        features = {"dtype": "float16", "note": "vision-encoder tokens for ITM re-ranking"}
    coll = Collection.create(settings.data_dir, collection, model=embedder.describe(), itm_features=features)
    catalog = open_catalog(settings.catalog_url())
    catalog.upsert_collection(coll.name, "images", embedder.describe())
    job_id = catalog.create_job(
        "index",
        coll.name,
        embedder.model_id,
        {"paths": [str(p) for p in paths], "batch_size": settings.batch_size, "shard_size": settings.shard_size},
    )
    bar = tqdm(
        total=len(files), unit="img", desc=f"index {coll.name}", disable=not progress or None, dynamic_ncols=True
    )

    def on_progress(report: IndexReport, done: int) -> None:
        bar.update(done - bar.n)
        bar.set_postfix(added=report.added, dup=report.skipped_duplicates, failed=report.failed, refresh=False)

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
    )
    try:
        report = pipeline.run(files)
        with pipeline.timer.time("index"):
            index_store.refresh(coll)
        report.timings = pipeline.timer.report()
    except BaseException as exc:
        catalog.update_job(job_id, state="failed", error=f"{type(exc).__name__}: {exc}", finished_at=utcnow())
        raise
    finally:
        bar.close()
    catalog.update_job(
        job_id,
        state="succeeded",
        finished_at=utcnow(),
        counts={
            "added": report.added,
            "skipped_duplicates": report.skipped_duplicates,
            "failed": report.failed,
            "total": report.total,
            "files": len(files),
        },
        failures=report.failures[:MAX_STORED_FAILURES],
        timings=report.timings,
    )
    for f in report.failures:
        log.info("skipped %s: %s", f["path"], f["error"])
    return report
