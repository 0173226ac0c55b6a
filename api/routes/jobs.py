"""Background jobs: start an index job (scope write), list, read, cancel, resume."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.auth import READ, WRITE
from api.deps import PathsDep, StateDep
from api.paths import PathView
from api.schemas import ERRORS, IndexJobRequest, JobInfo, JobList
from storage.catalog import JobRow

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def shown_failure(failure: dict[str, Any], paths: PathView) -> dict[str, Any]:
    """A job failure with its path and message shown as every response shows server paths."""
    out = dict(failure)
    if "path" in out:
        out["path"] = paths.show(out["path"]) or ""
    if isinstance(out.get("error"), str):
        out["error"] = paths.text(out["error"])
    return out


def job_info(job: JobRow, paths: PathView) -> JobInfo:
    return JobInfo(
        id=job.id,
        kind=job.kind,
        collection=job.collection,
        state=job.state,
        model_id=paths.model(job.model_id),
        counts=job.counts or {},
        failures=[shown_failure(f, paths) for f in job.failures or []],
        timings=job.timings or {},
        error=paths.text(job.error),
        created_at=_iso(job.created_at),
        started_at=_iso(job.started_at),
        finished_at=_iso(job.finished_at),
    )


@router.post("/index", response_model=JobInfo, status_code=202, dependencies=[WRITE])
def start_index_job(body: IndexJobRequest, state: StateDep, paths: PathsDep) -> JobInfo:
    """Index server-side folders or files (inside BLIPSEARCH_IMPORT_ROOTS) in the background."""
    job_id = state.jobs.submit_index(body.collection, body.paths, state.embedder)
    return job_info(state.jobs.get(job_id), paths)


@router.get("", response_model=JobList, dependencies=[READ])
def list_jobs(
    blip: StateDep,
    paths: PathsDep,
    collection: Annotated[str | None, Query(max_length=64)] = None,
    kind: Annotated[str | None, Query(max_length=32, description="index, moderate, caption, …")] = None,
    state: Annotated[
        Literal["pending", "running", "cancelling", "cancelled", "failed", "succeeded", "interrupted"] | None, Query()
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JobList:
    """Recent jobs (index, moderation, captions), newest first, with progress, rate and ETA in ``counts``."""
    return JobList(jobs=[job_info(j, paths) for j in blip.jobs.recent(collection, kind, state, limit)])


@router.get("/{job_id}", response_model=JobInfo, dependencies=[READ])
def get_job(job_id: str, state: StateDep, paths: PathsDep) -> JobInfo:
    return job_info(state.jobs.get(job_id), paths)


class JobFailures(BaseModel):
    job_id: str
    total: int
    offset: int
    limit: int
    failures: list[dict[str, Any]]


MAX_FAILURES_PAGE = 1000


@router.get("/{job_id}/failures", response_model=JobFailures, dependencies=[READ])
def job_failures(
    job_id: str,
    state: StateDep,
    paths: PathsDep,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_FAILURES_PAGE)] = 100,
) -> JobFailures:
    """The failures of a job's latest run, in the order they happened, a page at a time
    (``total``: how many are stored)."""
    from storage.jobs import failure_page

    total, page = failure_page(state.jobs.catalog, job_id, offset, limit)
    return JobFailures(
        job_id=job_id, total=total, offset=offset, limit=limit, failures=[shown_failure(f, paths) for f in page]
    )


@router.post("/{job_id}/cancel", response_model=JobInfo, dependencies=[WRITE])
def cancel_job(job_id: str, state: StateDep, paths: PathsDep) -> JobInfo:
    return job_info(state.jobs.cancel(job_id), paths)


@router.post("/{job_id}/resume", response_model=JobInfo, status_code=202, dependencies=[WRITE])
def resume_job(job_id: str, state: StateDep, paths: PathsDep) -> JobInfo:
    """Run an interrupted, failed or cancelled index job again in the background (committed images are skipped)."""
    return job_info(state.jobs.resume(job_id, state.embedder), paths)
