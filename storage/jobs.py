"""Job control through the catalog: progress reports and cancellation, from any process.

A running job calls ``JobWatch.tick`` as it goes. At most every ``poll_s`` seconds (0.25),
the job's counts and progress are written to the catalog, and its state is read: a
``cancelling`` state (set by ``blipsearch jobs cancel`` or ``POST /v1/jobs/{id}/cancel``)
raises CancelledError in the job, which keeps every shard it has committed.

``counts`` may be a callable: it is only evaluated when a report is due, so a job with many
failures does not recount them on every item (``FailureTally`` counts them incrementally).
A job another live process owns is never resumed here (``refuse_if_owned_elsewhere``).

Failures are stored as the job goes, one row each (``FailureLog``: only the ones new since the
last report are written, so a report costs what is new, never the whole list), and read back in
pages (``failure_page``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from blipsearch.errors import CancelledError, ConflictError, InvalidInputError, NotFoundError
from storage import owners
from storage.catalog import Catalog, JobFailureRow, JobOwnerRow, JobRow, utcnow

CANCELLING = "cancelling"
ACTIVE = ("pending", "running")
MAX_FAILURE_ROWS = 1_000_000  # failures stored per job run (the counts stay exact past it)


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


class FailureLog:
    """Appends a job run's new failures to the catalog (``job_failures``), in order."""

    def __init__(self, catalog: Catalog, job_id: str) -> None:
        self.catalog = catalog
        self.job_id = job_id
        self.stored = 0

    def clear(self) -> None:
        """Forget the failures of an earlier run of this job (a resumed job lists its latest run)."""
        from sqlalchemy import delete

        with self.catalog.session() as s:
            s.execute(delete(JobFailureRow).where(JobFailureRow.job_id == self.job_id))
        self.stored = 0

    def flush(self, failures: list[dict[str, Any]]) -> None:
        """Store ``failures[stored:]`` (``failures`` is the run's append-only list)."""
        new = failures[self.stored : MAX_FAILURE_ROWS]
        if not new:
            return
        from sqlalchemy import insert

        rows = [{"job_id": self.job_id, "seq": self.stored + i, "data": dict(f)} for i, f in enumerate(new)]
        with self.catalog.session() as s:
            s.execute(insert(JobFailureRow), rows)  # one executemany, not one statement per row
        self.stored += len(new)


def resolve_job_id(catalog: Catalog, given: str) -> str:
    """The job id ``given`` names: the id itself, or a unique prefix of one (the 8 characters
    listings show). NotFoundError when none matches, InvalidInputError when several do."""
    from sqlalchemy import select

    with catalog.session() as s:
        if s.get(JobRow, given) is not None:
            return given
        hexadecimal = bool(given) and all(c in "0123456789abcdef" for c in given)  # no LIKE wildcards
        found = list(s.scalars(select(JobRow.id).where(JobRow.id.startswith(given)).limit(2))) if hexadecimal else []
    if not found:
        raise NotFoundError(f"No job {given!r}. List jobs with: blipsearch jobs list")
    if len(found) > 1:
        raise InvalidInputError(f"Job id prefix {given!r} matches more than one job; give more characters.")
    return found[0]


def failure_page(catalog: Catalog, job_id: str, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """(total, the failures ``offset`` .. ``offset + limit``) of a job's latest run; 404 for an
    unknown job. Jobs recorded before failures had their own rows page their stored list."""
    from sqlalchemy import func, select

    job = catalog.get_job(job_id)
    with catalog.session() as s:
        total = s.scalar(select(func.count()).where(JobFailureRow.job_id == job_id)) or 0
        if total:
            rows = s.scalars(
                select(JobFailureRow.data)
                .where(JobFailureRow.job_id == job_id)
                .order_by(JobFailureRow.seq)
                .offset(offset)
                .limit(limit)
            )
            return int(total), [dict(r) for r in rows]
    stored = job.failures or []
    return len(stored), [dict(f) for f in stored[offset : offset + limit]]


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
