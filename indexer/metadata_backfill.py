"""Capture metadata and places for the records of an existing image collection: a resumable,
idempotent catalog job of kind ``metadata`` (the column job loop of indexer/column_job.py, as captions).

A record is pending while its metadata was never read (``capture_notes`` null: indexed before
these columns existed), or while it has a GPS position but no place (the ``places`` extra was
missing when it was read). Each pending record's original is read back (sha256-verified; only
the container header is parsed, no pixel is decoded) and every ``commit_every`` records the
shard's columns are rewritten atomically (Collection.update_columns; embeddings untouched). A
killed run keeps what it committed and a re-run does the rest; a run with nothing to do writes
nothing. Unreadable originals are failures, retried by the next run.
"""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq

from blipsearch.errors import InvalidInputError
from indexer.column_job import run_column_job
from media.exif import read_capture
from media.places import available as places_available
from media.places import place_columns
from media.stored import READ_ERRORS, ImageLimits, StoredImages
from storage.catalog import Catalog
from storage.collection import Collection
from storage.job_run import JobRun

Pending = tuple[int, str, str, bool]  # id, uri, sha256, whether the file must be read (else: places only)
COLUMNS = ("capture_notes", "gps_lat", "gps_lon", "country_code")


def _pending(coll: Collection, places: bool) -> list[tuple[str, list[Pending]]]:
    out = []
    for shard in coll.manifest.shards:
        path = coll.shard_path(shard)
        present = set(pq.read_schema(path).names)
        cols = ["id", "uri", "sha256", *(c for c in COLUMNS if c in present)]
        todo: list[Pending] = []
        for r in pq.read_table(path, columns=cols).to_pylist():
            if shard.is_deleted(r["id"]):
                continue
            if r.get("capture_notes") is None:
                todo.append((r["id"], r["uri"], r["sha256"], True))
            elif places and r.get("gps_lat") is not None and r.get("country_code") is None:
                todo.append((r["id"], r["uri"], r["sha256"], False))
        if todo:
            out.append((shard.file, todo))
    return out


def backfill_metadata(
    coll: Collection,
    *,
    limits: ImageLimits = ImageLimits(),
    commit_every: int = 256,
    workers: int = 2,
    progress: bool = True,
    catalog: Catalog | None = None,
    job_id: str | None = None,
) -> dict[str, Any]:
    """Read the capture metadata and places of every pending record of ``coll``."""
    if coll.manifest.kind != "images":
        raise InvalidInputError(f"{coll.name!r} is a text collection; only image collections have capture metadata.")
    work = _pending(coll, places_available())
    total = sum(len(t) for _, t in work)
    report: dict[str, Any] = {"collection": coll.name, "updated": 0, "with_date": 0, "with_gps": 0, "with_place": 0}
    report.update(failed=0, failures=[])
    job = None
    if catalog is not None:
        job = JobRun.start_or_resume(catalog, job_id, "metadata", coll.name, None, {}, total=total)
        report["job_id"] = job.job_id
    reader = StoredImages(coll.uri_aliases(), limits)
    current = {} if not any(not p[3] for _, t in work for p in t) else _positions(coll)

    def load(item: Pending) -> tuple[int, dict[str, Any] | Exception]:
        rid, uri, sha, read = item
        if not read:
            return rid, {"gps_lat": current[rid][0], "gps_lon": current[rid][1]}
        try:
            return rid, read_capture(reader.read(uri, sha))
        except READ_ERRORS as exc:
            return rid, exc

    def counts() -> dict[str, Any]:
        return {k: report[k] for k in ("updated", "with_date", "with_gps", "with_place", "failed")}

    def apply(ok: list[tuple[int, dict[str, Any]]]) -> dict[int, dict[str, Any]]:
        found = place_columns([v.get("gps_lat") for _, v in ok], [v.get("gps_lon") for _, v in ok])
        updates: dict[int, dict[str, Any]] = {}
        for i, (rid, values) in enumerate(ok):
            place = {k: found[k][i] for k in found}
            if "capture_notes" not in values and place["country_code"] is None:
                continue  # a position with still no place: nothing to write
            updates[rid] = {**values, **place}
            report["with_date"] += values.get("taken_at") is not None
            report["with_gps"] += values.get("gps_lat") is not None
            report["with_place"] += place["country_code"] is not None
        report["updated"] += len(updates)
        return updates

    run_column_job(
        coll,
        work,
        load,
        apply,
        report=report,
        counts=counts,
        desc=f"metadata {coll.name}",
        commit_every=commit_every,
        workers=workers,
        progress=progress,
        job=job,
    )
    return report


def _positions(coll: Collection) -> dict[int, tuple[float, float]]:
    t = coll.read_table(["id", "gps_lat", "gps_lon"]).to_pylist()
    return {r["id"]: (r["gps_lat"], r["gps_lon"]) for r in t if r["gps_lat"] is not None}
