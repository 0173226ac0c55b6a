"""Background indexing jobs of the HTTP API (POST /v1/jobs/index).

A job runs ``service.indexing.index_paths`` in a thread of this process; its state, progress and
failures live in the catalog, so ``GET /v1/jobs/{id}`` and ``blipsearch jobs show`` read the
same record, and a cancel from either is seen by the job within a second.
Server-side paths are confined to ``BLIPSEARCH_IMPORT_ROOTS``: no other file (and never a
URL) can be read through the API.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blipsearch.config import Settings
from blipsearch.errors import BlipsearchError, ConflictError, ForbiddenError, InvalidInputError
from indexer.sources.bulk import confine_objects
from media.objects import is_object_url
from storage.catalog import Catalog, JobRow, open_catalog, utcnow
from storage.jobs import ACTIVE, CANCELLING, cancel_job
from storage.layout import validate_name

if TYPE_CHECKING:
    from models.base import Embedder

log = logging.getLogger(__name__)


def confine(
    paths: list[str], roots: list[Path], *, expose: bool = False, prefixes: list[str] | None = None
) -> list[Path | str]:
    """Resolved ``paths``, each inside one of ``roots``; ForbiddenError otherwise. An object URL
    (``s3://bucket/prefix``) must lie under one of the object-store ``prefixes``."""
    if not roots and not prefixes:
        raise ForbiddenError(
            "Server-side indexing is disabled: set BLIPSEARCH_IMPORT_ROOTS to the folders it may read "
            '(a JSON list, e.g. ["/srv/images"]), or upload files to POST /v1/collections/{name}/images.'
        )
    allowed = [r.expanduser().resolve() for r in roots]
    out: list[Path | str] = []
    for raw in paths:
        if isinstance(raw, str) and prefixes and is_object_url(raw):
            out.extend(confine_objects([raw], prefixes))
            continue
        if not isinstance(raw, str) or not raw or "\x00" in raw or "://" in raw:
            raise InvalidInputError(f"Not a server path: {raw!r} (URLs are never fetched).")
        path = Path(raw).expanduser().resolve()
        if not any(path == r or path.is_relative_to(r) for r in allowed):
            listed = f" {[str(r) for r in allowed]}" if expose else ""
            raise ForbiddenError(f"{raw!r} is outside the import roots{listed}.")
        if not path.exists():
            raise InvalidInputError(f"{raw!r} does not exist on the server.")
        out.append(path)
    return out


class JobRunner:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    @property
    def catalog(self) -> Catalog:
        return open_catalog(self.settings.catalog_url())

    def submit_index(self, collection: str, paths: list[str], embedder: Callable[[str], Embedder]) -> str:
        from service.indexing import collection_model

        validate_name(collection)
        if not paths:
            raise InvalidInputError("paths is empty.")
        resolved = confine(
            paths, self.settings.import_roots, expose=self.settings.expose_paths, prefixes=self.settings.import_prefixes
        )
        model = collection_model(self.settings, collection)
        job_id: str = self.catalog.create_job(
            "index", collection, model, {"paths": [str(p) for p in resolved]}, state="pending"
        )
        self._start(job_id, collection, resolved, model, embedder)
        return job_id

    def resume(self, job_id: str, embedder: Callable[[str], Embedder]) -> JobRow:
        """Run an interrupted, failed or cancelled index job again in the background: committed
        images are skipped. Its saved paths are confined to the import roots again."""
        from indexer.runner import resume_fields
        from storage.job_run import RESUMABLE
        from storage.jobs import refuse_if_owned_elsewhere

        job = refuse_if_owned_elsewhere(self.catalog, job_id)  # 409 while another live process runs it
        with self._lock:
            alive = job_id in self._threads and self._threads[job_id].is_alive()
        if alive or job.kind != "index" or job.state not in RESUMABLE:
            raise ConflictError(
                f"Job {job_id} is a {'live ' if alive else ''}{job.state} {job.kind} job; "
                f"only index jobs that are {', '.join(RESUMABLE)} (and not running here) resume."
            )
        saved = job.settings or {}
        resolved = confine(
            list(saved.get("paths") or []), self.settings.import_roots, prefixes=self.settings.import_prefixes
        )
        if not self.catalog.transition(job_id, RESUMABLE, "pending", error=None, finished_at=None):
            raise ConflictError(f"Job {job_id} changed state while resuming; try again.")
        overrides, options = resume_fields(saved)  # how the job was started (as blipsearch jobs resume does)
        model = job.model_id or self.settings.model
        self._start(job_id, job.collection, resolved, model, embedder, overrides, options)
        return self.catalog.get_job(job_id)

    def _start(
        self,
        job_id: str,
        collection: str,
        paths: list[Path | str],
        model: str,
        embedder: Callable[[str], Embedder],
        overrides: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        thread = threading.Thread(
            target=self._run,
            args=(job_id, collection, paths, model, embedder, overrides or {}, options or {}),
            name=f"job-{job_id[:8]}",
            daemon=True,
        )
        with self._lock:
            self._threads[job_id] = thread
        thread.start()

    def _run(
        self,
        job_id: str,
        collection: str,
        paths: list[Path | str],
        model: str,
        embedder: Callable[[str], Embedder],
        overrides: dict[str, Any],
        options: dict[str, Any],
    ) -> None:
        from service.indexing import index_paths

        try:
            index_paths(
                self.settings.model_copy(update=overrides) if overrides else self.settings,
                paths,
                collection,
                embedder=embedder(model),
                progress=False,
                job_id=job_id,
                # files and objects named by lists/manifests are confined too
                roots=[*self.settings.import_roots, *self.settings.import_prefixes],
                **options,
            )
        except BlipsearchError as exc:  # recorded in the catalog by index_paths (or here, if it never started)
            log.info("job %s ended: %s", job_id, exc)
            self._end_unfinished(job_id, str(exc))
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self._end_unfinished(job_id, f"{type(exc).__name__}; see the server log")
        finally:
            with self._lock:
                self._threads.pop(job_id, None)

    def _end_unfinished(self, job_id: str, error: str) -> None:
        """A job whose run ended without recording how never stays pending, running or
        cancelling: it becomes failed (cancelled if a cancel was asked for)."""
        state = self.catalog.get_job(job_id).state
        if state == CANCELLING:
            self.catalog.transition(job_id, (CANCELLING,), "cancelled", finished_at=utcnow())
        elif state in ACTIVE:
            self.catalog.transition(job_id, ACTIVE, "failed", error=error, finished_at=utcnow())

    def get(self, job_id: str) -> JobRow:
        return self.catalog.get_job(job_id)

    def recent(self, collection: str | None, kind: str | None, state: str | None, limit: int) -> list[JobRow]:
        jobs = self.catalog.list_jobs(collection, limit if not (kind or state) else 10_000)
        return [j for j in jobs if (kind is None or j.kind == kind) and (state is None or j.state == state)][:limit]

    def cancel(self, job_id: str) -> JobRow:
        return cancel_job(self.catalog, job_id)

    def running(self) -> int:
        with self._lock:
            return sum(t.is_alive() for t in self._threads.values())

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel this process's jobs (committed shards stay) and wait for them briefly."""
        with self._lock:
            threads = dict(self._threads)
        for job_id in threads:
            self.catalog.transition(job_id, ACTIVE, CANCELLING)
        for t in threads.values():
            t.join(timeout)
