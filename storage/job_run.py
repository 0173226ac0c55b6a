"""One catalog job's life, the same for every kind (index, reembed, caption, moderate):
created (or resumed by id), progress as it goes, and how it ends.

``JobRun`` is a thin layer over the catalog and storage/jobs.py (``JobWatch`` for throttled
progress and cancellation, ``recorded`` for a failed or cancelled end): a job's code only says
what it counts.

    job = JobRun.start(catalog, "caption", coll.name, model_id, {"caption_model": ...}, total=n)
    with job.recorded():
        ...
        job.progress(counts, done, failures=failures)   # raises CancelledError when cancelled
    job.succeed(counts, done=n, failures=failures)

``failures`` (the run's append-only list of failure dicts) is stored as the job goes: each due
report writes only the failures new since the last one (storage/jobs.py:FailureLog), and
``GET /v1/jobs/{id}/failures`` / ``blipsearch jobs show ID --failures`` page them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from blipsearch.errors import CancelledError
from storage.catalog import Catalog, utcnow
from storage.jobs import FailureLog, JobWatch, recorded, refuse_if_owned_elsewhere

MAX_STORED_FAILURES = 10_000  # failures kept in the catalog per job (the counts stay exact)
RESUMABLE = ("pending", "running", "failed", "cancelled", "interrupted")  # a killed job may be left "running"


class JobRun:
    def __init__(self, catalog: Catalog, job_id: str, total: int | None = None) -> None:
        self.catalog = catalog
        self.job_id = job_id
        self.watch = JobWatch(catalog, job_id, total=total)
        self.failure_log = FailureLog(catalog, job_id)

    @classmethod
    def start(
        cls,
        catalog: Catalog,
        kind: str,
        collection: str,
        model_id: str | None,
        settings: dict[str, Any],
        *,
        total: int | None = None,
    ) -> JobRun:
        """A new running job of ``kind``."""
        return cls(catalog, catalog.create_job(kind, collection, model_id, settings), total)

    @classmethod
    def resume(cls, catalog: Catalog, job_id: str, *, total: int | None = None) -> JobRun:
        """Run the existing job ``job_id`` (again); a job cancelled meanwhile is not restarted, and
        one that another live process runs is refused (ConflictError)."""
        refuse_if_owned_elsewhere(catalog, job_id)
        if not catalog.transition(job_id, RESUMABLE, "running", started_at=utcnow(), finished_at=None, error=None):
            catalog.update_job(job_id, state="cancelled", finished_at=utcnow())
            raise CancelledError(f"Job {job_id} was cancelled before it started.")
        run = cls(catalog, job_id, total)
        run.failure_log.clear()  # the failures listed are the latest run's
        return run

    @classmethod
    def start_or_resume(
        cls,
        catalog: Catalog,
        job_id: str | None,
        kind: str,
        collection: str,
        model_id: str | None,
        settings: dict[str, Any],
        *,
        total: int | None = None,
    ) -> JobRun:
        if job_id is None:
            return cls.start(catalog, kind, collection, model_id, settings, total=total)
        return cls.resume(catalog, job_id, total=total)

    @property
    def total(self) -> int | None:
        return self.watch.total

    @total.setter
    def total(self, value: int | None) -> None:
        self.watch.total = value

    def progress(
        self,
        counts: dict[str, Any] | Callable[[], dict[str, Any]],
        done: int,
        *,
        force: bool = False,
        timings: Callable[[], dict[str, Any]] | None = None,
        failures: list[dict[str, Any]] | None = None,
    ) -> None:
        """Counts and progress (throttled: a callable ``counts`` is evaluated only when a report is
        due, and the ``failures`` new since the last report are stored then); raises
        CancelledError once the job is cancelled."""
        if failures is not None:
            inner = counts

            def counts_and_failures() -> dict[str, Any]:
                self.failure_log.flush(failures)
                return inner() if callable(inner) else inner

            counts = counts_and_failures
        self.watch.tick(counts, done, force=force, timings=timings)

    def recorded(
        self, extra: Callable[[], dict[str, Any]] = dict, failures: list[dict[str, Any]] | None = None
    ) -> AbstractContextManager[None]:
        """A context that records a failed or cancelled end (storage/jobs.py:recorded), with the
        ``failures`` not yet stored."""
        if failures is None:
            return recorded(self.catalog, self.job_id, extra)

        def extra_and_failures() -> dict[str, Any]:
            self.failure_log.flush(failures)
            return extra()

        return recorded(self.catalog, self.job_id, extra_and_failures)

    def succeed(
        self,
        counts: dict[str, Any],
        *,
        done: int,
        failures: list[dict[str, Any]] | None = None,
        timings: dict[str, Any] | None = None,
    ) -> None:
        """The job ended well: its final counts, ``done`` of ``done``, the failures it recorded."""
        self.failure_log.flush(failures or [])
        fields: dict[str, Any] = {"failures": (failures or [])[:MAX_STORED_FAILURES]}
        if timings is not None:
            fields["timings"] = timings
        self.catalog.update_job(
            self.job_id,
            state="succeeded",
            finished_at=utcnow(),
            counts={**counts, "progress": {"done": done, "total": done}},
            **fields,
        )
