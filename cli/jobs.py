"""``blipsearch jobs list|show|cancel|resume``: jobs recorded in the catalog."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import DataDirOpt, JsonOpt, emit, handle_errors, settings_for

if TYPE_CHECKING:
    from blipsearch.config import Settings
    from storage.catalog import Catalog, JobRow

jobs_app = typer.Typer(
    no_args_is_help=True, help="Index, caption, moderation and re-embed jobs (state, progress, timings)."
)
JobIdArg = Annotated[str, typer.Argument(help="Job id (see jobs list).")]


def _catalog(data_dir: Path | None) -> Catalog:
    from storage.catalog import open_catalog

    return open_catalog(settings_for(data_dir).catalog_url())


def _row(job: JobRow) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "collection": job.collection,
        "state": job.state,
        "model_id": job.model_id,
        "settings": job.settings,
        "counts": job.counts,
        "failures": job.failures,
        "timings": job.timings,
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


# The count a job kind is about, for ``jobs list`` (index jobs: added).
HEADLINE = {"caption": "captioned", "moderate": "checked", "reembed": "copied"}


def _headline(job: dict[str, Any]) -> str:
    key = HEADLINE.get(job["kind"], "added")
    return f"{key} {(job['counts'] or {}).get(key, 0)}"


def _show(p: dict[str, Any]) -> str:
    c = p["counts"] or {}
    prog = c.get("progress") or {}
    lines = [
        f"job {p['id']}  {p['kind']}  {p['collection']}  {p['state']}",
        f"  model: {p['model_id']}",
        f"  started {p['started_at']}  finished {p['finished_at']}",
        f"  progress: {prog.get('done', 0)}/{prog.get('total', '?')} at {prog.get('rate_per_s', '?')}/s"
        + (f", ETA {prog['eta_s']} s" if prog.get("eta_s") is not None else ""),
        f"  added {c.get('added', 0)}, duplicates {c.get('skipped_duplicates', 0)}, failed {c.get('failed', 0)} "
        f"{c.get('failed_by_reason') or ''}, updated {c.get('updated', 0)}",
    ]
    stages = (p["timings"] or {}).get("stages", p["timings"] or {})
    if stages:
        lines.append("  stages (busy seconds, items/s) and queue depths (mean/max/capacity):")
        lines += [f"    {name}: {json.dumps(v, default=str)}" for name, v in stages.items()]
    if p["error"]:
        lines.append(f"  error: {p['error']}")
    lines += [f"  failed: {f.get('path')}: {f.get('error')}" for f in (p["failures"] or [])[:20]]
    return "\n".join(lines)


@jobs_app.command("list")
@handle_errors
def list_(
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="Only this collection.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recent jobs, newest first."""
    jobs = [_row(j) for j in _catalog(data_dir).list_jobs(collection, limit)]
    emit(
        {"jobs": jobs},
        as_json,
        lambda p: (
            "\n".join(
                f"{j['id']}  {j['kind']:<8} {j['collection']:<20} {j['state']:<10} {_headline(j)}  {j['created_at']}"
                for j in p["jobs"]
            )
            or "no jobs"
        ),
    )


@jobs_app.command("show")
@handle_errors
def show(job_id: JobIdArg, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """State, progress, counts by reason, per-stage timings and failures of one job."""
    emit(_row(_catalog(data_dir).get_job(job_id)), as_json, _show)


@jobs_app.command("cancel")
@handle_errors
def cancel(job_id: JobIdArg, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Ask a pending or running job to stop; it keeps what it committed."""
    from storage.jobs import cancel_job

    job = cancel_job(_catalog(data_dir), job_id)
    emit(_row(job), as_json, lambda p: f"job {p['id']}: {p['state']}")


@jobs_app.command("resume")
@handle_errors
def resume(job_id: JobIdArg, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Run an interrupted, failed or cancelled index or caption job again: committed work is skipped."""
    from blipsearch.errors import ConflictError
    from storage.job_run import RESUMABLE

    settings = settings_for(data_dir)
    catalog = _catalog(data_dir)
    job = catalog.get_job(job_id)
    if job.kind not in RESUMABLES or job.state not in RESUMABLE:
        raise ConflictError(
            f"Job {job_id} is a {job.state} {job.kind} job; only {' and '.join(RESUMABLES)} jobs in {RESUMABLE} resume."
        )
    summary = RESUMABLES[job.kind](settings, job)
    emit(_row(catalog.get_job(job_id)), as_json, lambda p: f"job {p['id']}: {p['state']}, {summary}")


def _resume_index(settings: Settings, job: JobRow) -> str:
    from indexer.runner import resume_fields
    from service.indexing import index_paths

    saved = job.settings or {}
    overrides, fields = resume_fields(saved)
    report = index_paths(
        settings.model_copy(update=overrides),
        saved.get("paths", []),
        job.collection,
        model=job.model_id,
        job_id=job.id,
        **fields,
    )
    return f"added {report.added}"


def _resume_caption(settings: Settings, job: JobRow) -> str:
    from models.captioners import Decoding
    from service.captioning import caption_collection
    from service.models import load_captioner

    saved = dict(job.settings or {})
    captioner = load_captioner(settings, saved.pop("caption_model", None) or job.model_id)
    decoding = Decoding(**{k: v for k, v in saved.items() if k in Decoding.__dataclass_fields__})
    report = caption_collection(settings, job.collection, captioner, decoding, job_id=job.id)
    return f"captioned {report['captioned']}"


RESUMABLES: dict[str, Callable[[Settings, JobRow], str]] = {"index": _resume_index, "caption": _resume_caption}
