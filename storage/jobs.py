"""Job control through the catalog: progress reports and cancellation, from any process.

A running job calls ``JobWatch.tick`` as it goes. At most every ``poll_s`` seconds (0.25),
the job's counts and progress are written to the catalog, and its state is read: a
``cancelling`` state (set by ``blipsearch jobs cancel`` or ``POST /v1/jobs/{id}/cancel``)
raises CancelledError in the job, which keeps every shard it has committed.

``counts`` may be a callable: it is only evaluated when a report is due, so a job with many
failures does not recount them on every item (``FailureTally`` counts them incrementally).
A job another live process owns is never resumed here (``refuse_if_owned_elsewhere``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from blipsearch.errors import CancelledError, ConflictError
from storage import owners
from storage.catalog import Catalog, JobOwnerRow, JobRow, utcnow

CANCELLING = "cancelling"
ACTIVE = ("pending", "running")


def cancel_job(catalog: Catalog, job_id: str) -> JobRow:
    """Ask a pending or running job to stop (it stops within ``poll_s``)."""
    job = catalog.get_job(job_id)
    if not catalog.transition(job_id, ACTIVE, CANCELLING):
        raise ConflictError(f"Job {job_id} is {job.state}; only pending or running jobs can be cancelled.")
    return catalog.get_job(job_id)


class FailureTally:
    """Failures by reason, counted incrementally from an append-only list of failure dicts."""

    def __init__(self, key: str = "reason") -> None:
        self.key = key
        self.seen = 0
        self.by_reason: dict[str, int] = {}

    def update(self, failures: list[dict[str, Any]]) -> dict[str, int]:
        if len(failures) < self.seen:  # a new list: count it afresh
            self.seen, self.by_reason = 0, {}
        for f in failures[self.seen :]:
            reason = str(f.get(self.key, "error"))
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        self.seen = len(failures)
        return dict(self.by_reason)


def job_owner(catalog: Catalog, job_id: str) -> owners.ProcessId | None:
    """The process recorded as running (or having queued) ``job_id``."""
    with catalog.session() as s:
        row = s.get(JobOwnerRow, job_id)
        return None if row is None else owners.ProcessId(row.pid, row.host, row.started)


def refuse_if_owned_elsewhere(catalog: Catalog, job_id: str) -> JobRow:
    """The job, unless it is pending or running in another live process (pid, host and start
    time checked; a dead owner's job was marked ``interrupted`` by ``get_job``): ConflictError."""
    job = catalog.get_job(job_id)
    if job.state not in ACTIVE:
        return job
    owner = job_owner(catalog, job_id)
    if owner is not None and owner != owners.current() and owners.is_alive(owner):
        raise ConflictError(
            f"Job {job_id} is {job.state} in another process (pid {owner.pid} on {owner.host}); it cannot be "
            f"resumed while that process runs. Cancel it first: blipsearch jobs cancel {job_id}"
        )
    return job


class JobWatch:
    def __init__(self, catalog: Catalog, job_id: str, total: int | None = None, poll_s: float = 0.25) -> None:
        self.catalog = catalog
        self.job_id = job_id
        self.total = total
        self.poll_s = poll_s
        self._t0 = time.monotonic()
        self._last = 0.0

    def tick(
        self,
        counts: dict[str, Any] | Callable[[], dict[str, Any]],
        done: int,
        *,
        force: bool = False,
        timings: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.poll_s:
            return
        self._last = now
        elapsed = now - self._t0
        rate = done / elapsed if elapsed > 0 else 0.0
        progress: dict[str, Any] = {"done": done, "total": self.total, "rate_per_s": round(rate, 2)}
        if self.total and rate > 0:
            progress["eta_s"] = round((self.total - done) / rate, 1)
        extra = {"timings": timings()} if timings else {}
        now_counts = counts() if callable(counts) else counts
        self.catalog.update_job(self.job_id, counts={**now_counts, "progress": progress}, **extra)
        if self.catalog.get_job(self.job_id).state == CANCELLING:
            raise CancelledError(f"Job {self.job_id} was cancelled; committed shards are kept.")


@contextmanager
def recorded(catalog: Catalog, job_id: str, extra: Callable[[], dict[str, Any]] = dict) -> Iterator[None]:
    """Record how the enclosed job work ends, if it does not succeed: ``cancelled`` (with
    ``extra()`` fields) or ``failed`` with the error; the exception propagates."""
    try:
        yield
    except CancelledError:
        catalog.update_job(job_id, state="cancelled", finished_at=utcnow(), **extra())
        raise
    except BaseException as exc:
        catalog.update_job(job_id, state="failed", error=f"{type(exc).__name__}: {exc}", finished_at=utcnow())
        raise
