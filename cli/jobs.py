"""``blipsearch jobs list|show|cancel|resume``: jobs recorded in the catalog."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
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
JobIdArg = Annotated[str, typer.Argument(help="Job id, or a unique prefix of it (jobs list shows 8 characters).")]


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


# The counts a job kind is about, first in its summary (index jobs: added).
HEADLINE = {"caption": "captioned", "moderate": "checked", "reembed": "copied", "ocr": "read"}
_NOT_COUNTS = {"progress", "failed_by_reason", "files", "total", "decisions"}
_LABELS = {"skipped_duplicates": "duplicates", "already_done": "already done", "removed_stale": "removed stale"}


def _found_nothing(job: dict[str, Any]) -> bool:
    """An index job that finished without finding any image (an empty folder, a glob that matched nothing)."""
    progress = (job["counts"] or {}).get("progress") or {}
    return job["kind"] == "index" and job["state"] == "succeeded" and progress.get("total") == 0


def _headline(job: dict[str, Any]) -> str:
    if _found_nothing(job):
        return "no images found"
    key = HEADLINE.get(job["kind"], "added")
    return f"{key} {(job['counts'] or {}).get(key, 0)}"


def _short(job_id: str) -> str:
    return job_id[:8]


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else str(value or "-")


def _wall_s(p: dict[str, Any]) -> float | None:
    """Seconds from started to finished (to now while it runs): what the two timestamps say."""
    start, end = p["started_at"], p["finished_at"]
    if not isinstance(start, datetime):
        return None
    if not isinstance(end, datetime):
        end = datetime.now(start.tzinfo or timezone.utc)
    if start.tzinfo is None and end.tzinfo is not None:
        start = start.replace(tzinfo=end.tzinfo)
    elif end.tzinfo is None and start.tzinfo is not None:
        end = end.replace(tzinfo=start.tzinfo)
    return max((end - start).total_seconds(), 0.0)


def _counts_line(p: dict[str, Any]) -> str:
    """The job's own counts, its headline first, zeros left out ("failed 0" says nothing)."""
    c = p["counts"] or {}
    first = HEADLINE.get(p["kind"], "added")
    keys = [first, *(k for k in c if k != first)]
    parts = []
    for key in keys:
        value = c.get(key)
        if key in _NOT_COUNTS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if value == 0 and key != first:
            continue
        text = f"{_LABELS.get(key, key.replace('_', ' '))} {value}"
        if key == "failed" and c.get("failed_by_reason"):
            text += " (" + ", ".join(f"{r} {n}" for r, n in sorted(c["failed_by_reason"].items())) + ")"
        parts.append(text)
    if c.get("decisions"):
        parts.append("decisions: " + ", ".join(f"{d} {n}" for d, n in sorted(c["decisions"].items())))
    if _found_nothing(p):
        parts.append("no images found")  # as `index` said when it ran
    return ", ".join(parts)


MIN_RATE_BUSY_S = 0.01  # a stage busy for less has no meaningful items/s (shown as '-')


def _rate(v: dict[str, Any]) -> str:
    rate, busy = v.get("items_per_s"), v.get("busy_s", 0)
    if not isinstance(rate, int | float) or not isinstance(busy, int | float) or busy < MIN_RATE_BUSY_S:
        return "-"
    return f"{rate:.1f}"


def _stage_table(timings: dict[str, Any]) -> list[str]:
    """Per-stage busy seconds and rates, then queue depths, as aligned columns (the name column
    as wide as the longest stage or queue name)."""
    stages = timings.get("stages", timings)
    rows = [(n, v) for n, v in stages.items() if isinstance(v, dict) and n != "queues" and "busy_s" in v]
    queues = timings.get("queues") or stages.get("queues") or {}
    w = max([16, *(len(str(n)) for n, _ in rows), *(len(str(n)) for n in queues)])
    lines = []
    if rows:
        lines.append(f"    {'stage':<{w}} {'busy s':>10} {'items':>10} {'items/s':>10}")
        for name, v in rows:
            lines.append(f"    {name:<{w}} {v.get('busy_s', 0):>10.2f} {v.get('items', 0):>10} {_rate(v):>10}")
    if queues:
        lines.append(f"    {'queue':<{w}} {'mean':>10} {'max':>10} {'capacity':>10}")
        for name, q in queues.items():
            lines.append(f"    {name:<{w}} {q.get('mean', 0):>10} {q.get('max', 0):>10} {q.get('capacity', 0):>10}")
    return lines


def _show(p: dict[str, Any]) -> str:
    c = p["counts"] or {}
    prog = c.get("progress") or {}
    lines = [
        f"job {p['id']}  {p['kind']}  {p['collection']}  {p['state']}",
        f"  model: {p['model_id'] or '-'}",
    ]
    wall = _wall_s(p)
    when = f"  started {_when(p['started_at'])}  finished {_when(p['finished_at'])}"
    lines.append(when + (f"  (wall_s {wall:.1f})" if wall is not None else ""))
    done, total = prog.get("done"), prog.get("total")
    if done is not None:
        line = f"  progress: {done}" + (f"/{total}" if total is not None else "")
        rate = prog.get("rate_per_s")
        if p["state"] in ("pending", "running", "cancelling") and isinstance(rate, int | float) and rate > 0:
            line += f" at {rate}/s" + (f", ETA {prog['eta_s']} s" if prog.get("eta_s") is not None else "")
        lines.append(line)
    counts = _counts_line(p)
    if counts:
        lines.append(f"  {counts}")
    table = _stage_table(p["timings"] or {})
    if table:
        lines.append("  stages (busy seconds, items/s) and queue depths:")
        lines += table
    if p["error"]:
        lines.append(f"  error: {p['error']}")
    failures = p["failures"] or []
    lines += [f"  failed: {f.get('path', f.get('id'))}: {f.get('error')}" for f in failures[:20]]
    if len(failures) > 20:
        lines.append(f"  … {len(failures) - 20} more: blipsearch jobs show {_short(p['id'])} --failures")
    return "\n".join(lines)


def _list(p: dict[str, Any]) -> str:
    if not p["jobs"]:
        return "no jobs"
    head = f"{'ID':<8}  {'KIND':<8} {'COLLECTION':<20} {'STATE':<11} {'DONE':<16} CREATED"
    return "\n".join(
        [head]
        + [
            f"{_short(j['id']):<8}  {j['kind']:<8} {j['collection']:<20} {j['state']:<11} {_headline(j):<16} "
            f"{_when(j['created_at'])}"
            for j in p["jobs"]
        ]
    )


def _failures(p: dict[str, Any]) -> str:
    lines = [f"job {p['job_id']}: failures {p['offset'] + 1}-{p['offset'] + len(p['failures'])} of {p['total']}"]
    if not p["failures"]:
        lines = [f"job {p['job_id']}: no failures" + (f" past {p['offset']}" if p["offset"] and p["total"] else "")]
    for i, f in enumerate(p["failures"], start=p["offset"] + 1):
        reason = f" [{f['reason']}]" if f.get("reason") else ""
        lines.append(f"  {i:>6}  {f.get('path', f.get('id'))}: {f.get('error')}{reason}")
    return "\n".join(lines)


@jobs_app.command("list")
@handle_errors
def list_(
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="Only this collection.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recent jobs, newest first (ids shortened to 8 characters; any unique prefix names a job)."""
    jobs = [_row(j) for j in _catalog(data_dir).list_jobs(collection, limit)]
    emit({"jobs": jobs}, as_json, _list)


@jobs_app.command("show")
@handle_errors
def show(
    job_id: JobIdArg,
    failures: Annotated[bool, typer.Option("--failures", help="List the job's failures, a page at a time.")] = False,
    offset: Annotated[int, typer.Option("--offset", min=0, help="With --failures: skip this many.")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="With --failures: at most this many.")] = 100,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """State, progress, counts by reason, per-stage timings and failures of one job."""
    catalog = _catalog(data_dir)
    job_id = _resolve(catalog, job_id)
    if failures:
        from storage.jobs import failure_page

        total, page = failure_page(catalog, job_id, offset, limit)
        payload = {"job_id": job_id, "total": total, "offset": offset, "limit": limit, "failures": page}
        emit(payload, as_json, _failures)
        return
    emit(_row(catalog.get_job(job_id)), as_json, _show)


def _resolve(catalog: Catalog, job_id: str) -> str:
    from storage.jobs import resolve_job_id

    return resolve_job_id(catalog, job_id)


@jobs_app.command("cancel")
@handle_errors
def cancel(job_id: JobIdArg, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Ask a pending or running job to stop; it keeps what it committed."""
    from storage.jobs import cancel_job

    catalog = _catalog(data_dir)
    job = cancel_job(catalog, _resolve(catalog, job_id))
    emit(_row(job), as_json, lambda p: f"job {p['id']}: {p['state']}")


@jobs_app.command("resume")
@handle_errors
def resume(job_id: JobIdArg, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Run an interrupted, failed or cancelled index or caption job again: committed work is skipped."""
    from blipsearch.errors import ConflictError
    from storage.job_run import RESUMABLE

    settings = settings_for(data_dir)
    catalog = _catalog(data_dir)
    job_id = _resolve(catalog, job_id)
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
