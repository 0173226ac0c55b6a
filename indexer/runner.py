"""One runner for bulk indexing: sources → read/decode → model → shard writer → index.

The runner owns what every indexing job shares, whatever executes it: the sources, the
collection, the catalog job (created, or resumed by id), progress (a bar and ``JobWatch``:
counts, rate, ETA, cancellation), the final index refresh and the job's outcome. An
``Executor`` (indexer/executors/) runs the stages in between: threads and decode processes
on this machine (``LocalExecutor``) or Ray Data tasks and model actors on a cluster
(``RayExecutor``). Both commit the same shards through the same manifest and update rules,
in input order, so they produce the same records.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from blipsearch.errors import NoItmModelError
from indexer.commit import IndexReport
from indexer.sources import open_sources
from indexer.sources.base import SourceItem
from indexer.sources.bulk import BulkOptions
from indexer.sources.committed import skip_unchanged
from indexer.stages import StageTimer
from media.objects import ObjectOptions
from models.base import Embedder
from search import index_store
from storage.catalog import Catalog
from storage.collection import Collection
from storage.job_run import JobRun
from storage.jobs import FailureTally

log = logging.getLogger(__name__)

Progress = Callable[[IndexReport, int], None]


class Executor(ABC):
    """Runs the stages between the sources and the committed shards."""

    name: str
    timer: StageTimer

    @abstractmethod
    def run(
        self, coll: Collection, embedder: Embedder, items: Iterable[SourceItem], on_progress: Progress
    ) -> IndexReport:
        """Read, decode, embed and commit ``items`` into ``coll``; call ``on_progress`` as it goes."""

    def describe(self) -> dict[str, Any]:
        """What the catalog job records about how it ran."""
        return {"runner": self.name}


@dataclass
class IndexRequest:
    """What to index: ``paths`` (folders, files, globs, lists, manifests, tar shards)."""

    paths: Sequence[str | Path]
    collection: str
    input_format: str = "auto"
    path_column: str | None = None
    metadata_columns: Sequence[str] | None = None
    index_spec: str | None = None
    on_disk: bool | None = None  # --on-disk / --in-memory (None: the collection's, or by size)
    roots: Sequence[Path | str] | None = None  # confine files named by lists/manifests (API jobs); str: s3:// prefixes
    cache_itm_features: bool = False
    image_column: str | None = None  # dataset files: the column of image bytes (default: recognised)
    allow_pipe: bool = False  # run pipe: inputs as shell commands (the CLI's --allow-pipe only)
    objects: ObjectOptions | None = None  # how object stores are reached (endpoint, timeouts, retries)

    def job_settings(self) -> dict[str, Any]:
        return {
            "paths": [str(p) for p in self.paths],
            "cache_itm_features": self.cache_itm_features,
            "input_format": self.input_format,
            "path_column": self.path_column,
            "metadata_columns": list(self.metadata_columns) if self.metadata_columns is not None else None,
            "index_spec": self.index_spec,
            "on_disk": self.on_disk,
            "image_column": self.image_column,
            "allow_pipe": self.allow_pipe,
        }


def resume_fields(saved: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What an index job recorded (``IndexRequest.job_settings`` plus the executor's sizes), to
    run it again: (settings overrides, ``IndexRequest`` fields other than paths and collection)."""
    overrides = {k: saved[k] for k in ("batch_size", "shard_size") if saved.get(k)}
    fields = {
        "cache_itm_features": bool(saved.get("cache_itm_features")),
        "input_format": saved.get("input_format") or "auto",
        "path_column": saved.get("path_column"),
        "metadata_columns": saved.get("metadata_columns"),
        "index_spec": saved.get("index_spec"),
        "on_disk": saved.get("on_disk"),
        "image_column": saved.get("image_column"),
        "allow_pipe": bool(saved.get("allow_pipe")),  # started with --allow-pipe from the CLI
    }
    return overrides, fields


def model_for_collection(data_dir: Path, name: str, model: str | None, default: str) -> str:
    """The explicit ``--model``, else the existing collection's model, else ``default``."""
    if model:
        return model
    if Collection.exists(data_dir, name):
        return Collection.open(data_dir, name).manifest.model_id
    return default


def create_image_collection(
    data_dir: Path, catalog: Catalog, name: str, embedder: Embedder, cache_itm_features: bool = False
) -> Collection:
    """Create (or open, if it exists for the same model) an image collection and register it
    in the catalog."""
    if cache_itm_features and not embedder.has_itm:
        raise NoItmModelError(
            f"--cache-itm-features stores the ITM model's vision tokens, but the {embedder.family} model "
            f"{embedder.model_id!r} has no ITM head; index without it (re-rank with --rerank-model)."
        )
    features = {"dtype": "float16", "note": "vision-encoder tokens for ITM re-ranking"} if cache_itm_features else None
    coll = Collection.create(data_dir, name, model=embedder.describe(), itm_features=features)
    catalog.upsert_collection(coll.name, "images", embedder.describe())
    return coll


class IndexRunner:
    def __init__(
        self,
        data_dir: Path,
        catalog: Catalog,
        executor: Executor,
        *,
        policy: index_store.IndexPolicy | None = None,
        progress: bool = True,
        job_extra: dict[str, Any] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.catalog = catalog
        self.executor = executor
        self.policy = policy
        self.progress = progress
        self.job_extra = job_extra or {}

    def run(self, request: IndexRequest, embedder: Embedder, job_id: str | None = None) -> IndexReport:
        """Index ``request`` as a catalog job (``job_id``: an existing one to run or resume).
        Cancellable through the catalog (storage/jobs.py); every committed shard is kept
        whatever happens, and a re-run skips what is already committed."""
        sources = open_sources(
            request.paths,
            request.input_format,
            path_column=request.path_column,
            metadata_columns=request.metadata_columns,
            roots=request.roots,
            max_file_bytes=getattr(getattr(self.executor, "options", None), "max_bytes", None),
            bulk=BulkOptions(
                image_column=request.image_column,
                allow_pipe=request.allow_pipe,
                objects=request.objects or ObjectOptions.from_env(),
            ),
        )
        total = sources.count()  # None when unknown (compressed tar shards)
        coll = create_image_collection(
            self.data_dir, self.catalog, request.collection, embedder, request.cache_itm_features
        )
        job_settings = {**request.job_settings(), **self.job_extra, **self.executor.describe()}
        job = JobRun.start_or_resume(
            self.catalog, job_id, "index", coll.name, embedder.model_id, job_settings, total=total
        )
        timer = self.executor.timer
        desc = f"index {coll.name}" + (f" ({self.executor.name})" if self.executor.name != "local" else "")
        bar = tqdm(total=total, unit="img", desc=desc, disable=not self.progress or None, dynamic_ncols=True)

        tally = FailureTally()

        def on_progress(report: IndexReport, done: int) -> None:
            bar.update(done - bar.n)
            bar.set_postfix(added=report.added, dup=report.skipped_duplicates, failed=report.failed, refresh=False)
            job.progress(lambda: job_counts(report, total, tally), done, timings=timer.report, failures=report.failures)

        with bar, job.recorded(lambda: {"timings": timer.report()}):
            report = self.executor.run(coll, embedder, skip_unchanged(sources, coll), on_progress)
            with timer.time("index"):
                index_store.refresh(coll, spec=request.index_spec, policy=self.policy, on_disk=request.on_disk)
            report.timings = timer.report()
        job.succeed(
            job_counts(report, total, tally), done=report.total, failures=report.failures, timings=report.timings
        )
        for f in report.failures:
            log.info("skipped %s: %s", f["path"], f["error"])
        report.job_id = job.job_id
        return report


def job_counts(report: IndexReport, files: int | None, tally: FailureTally | None = None) -> dict[str, Any]:
    by_reason = (tally or FailureTally()).update(report.failures)
    return {
        "added": report.added,
        "skipped_duplicates": report.skipped_duplicates,
        "failed": report.failed,
        "failed_by_reason": by_reason,
        "updated": report.updated,
        "ocr_failed": len(report.ocr_failures),
        "removed_stale": report.removed_stale,
        "total": report.total,
        "files": files,
    }
