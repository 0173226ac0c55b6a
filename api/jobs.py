"""Background indexing jobs of the HTTP API (POST /v1/jobs/index).

A job runs ``indexer.job.index_paths`` in a thread of this process; its state, progress and
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
from typing import TYPE_CHECKING

from blipsearch.config import Settings
from blipsearch.errors import BlipsearchError, ForbiddenError, InvalidInputError
from indexer.control import ACTIVE, CANCELLING, cancel_job
from storage.catalog import Catalog, JobRow, open_catalog, utcnow
from storage.collection import validate_name

if TYPE_CHECKING:
    from models.base import Embedder

log = logging.getLogger(__name__)


def confine(paths: list[str], roots: list[Path], *, expose: bool = False) -> list[Path]:
    """Resolved ``paths``, each inside one of ``roots``; ForbiddenError otherwise."""
    if not roots:
        raise ForbiddenError(
            "Server-side indexing is disabled: set BLIPSEARCH_IMPORT_ROOTS to the folders it may read "
            '(a JSON list, e.g. ["/srv/images"]), or upload files to POST /v1/collections/{name}/images.'
        )
    allowed = [r.expanduser().resolve() for r in roots]
    out = []
    for raw in paths:
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
        from indexer.job import model_for_collection

        validate_name(collection)
        if not paths:
            raise InvalidInputError("paths is empty.")
        resolved = confine(paths, self.settings.import_roots, expose=self.settings.expose_paths)
        model = model_for_collection(self.settings, collection, None)
        job_id: str = self.catalog.create_job(
            "index", collection, model, {"paths": [str(p) for p in resolved]}, state="pending"
        )
        thread = threading.Thread(
            target=self._run,
            args=(job_id, collection, resolved, model, embedder),
            name=f"job-{job_id[:8]}",
            daemon=True,
        )
        with self._lock:
            self._threads[job_id] = thread
        thread.start()
        return job_id

    def _run(
        self, job_id: str, collection: str, paths: list[Path], model: str, embedder: Callable[[str], Embedder]
    ) -> None:
        from indexer.job import index_paths

        try:
            index_paths(
                self.settings,
                paths,
                collection,
                embedder=embedder(model),
                progress=False,
                job_id=job_id,
                roots=self.settings.import_roots,  # files named by lists/manifests are confined too
            )
        except BlipsearchError as exc:  # recorded in the catalog by index_paths (or here, if it never started)
            log.info("job %s ended: %s", job_id, exc)
            if self.catalog.get_job(job_id).state in ACTIVE:
                self.catalog.update_job(job_id, state="failed", error=str(exc), finished_at=utcnow())
        except Exception:
            log.exception("job %s failed", job_id)
        finally:
            with self._lock:
                self._threads.pop(job_id, None)

    def get(self, job_id: str) -> JobRow:
        return self.catalog.get_job(job_id)

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
