"""Batch moderation of a collection: a resumable, idempotent catalog job.

Records already checked under this policy name and version are skipped, results are written
per batch (a unique key makes a re-write a no-op), so a killed or cancelled run resumes where
it stopped and a re-run writes nothing new. Unreadable images are recorded as failures.
"""

from __future__ import annotations

import logging
from typing import Any

from tqdm import tqdm

from blipsearch.config import Settings
from media.stored import READ_ERRORS, ImageLimits, StoredImages
from moderation.checks import Moderator
from moderation.store import done_ids, save_results
from storage.catalog import Catalog
from storage.collection import Collection
from storage.job_run import JobRun
from storage.schema import record_schema

RECORD_COLUMNS = ("ocr_text", "pdq_hash", "pdq_quality")

log = logging.getLogger(__name__)


def moderate_collection(
    settings: Settings, catalog: Catalog, coll: Collection, moderator: Moderator, *, progress: bool = True
) -> dict[str, Any]:
    policy = moderator.policy
    # the stored columns the record-level kinds read, where this collection's records have them
    extra = [c for c in RECORD_COLUMNS if c in record_schema(coll.manifest).names] if moderator.kinds else []
    table = coll.read_table(["id", "uri", "sha256", *extra])
    done = done_ids(catalog, coll.name, policy)
    cols = (table.column(c).to_pylist() for c in ("id", "uri", "sha256"))
    stored = table.select(extra).to_pylist() if extra else [{}] * table.num_rows
    todo = [(int(r), u, sha, rec) for r, u, sha, rec in zip(*cols, stored, strict=True) if int(r) not in done]
    reader = StoredImages(coll.uri_aliases(), ImageLimits.from_settings(settings))
    job = JobRun.start(
        catalog,
        "moderate",
        coll.name,
        moderator.model_ids["itc"] or "",
        {"policy": policy.name, "version": policy.version},
        total=len(todo),
    )
    counts: dict[str, Any] = {"checked": 0, "already_done": len(done), "failed": 0, "decisions": {}}
    failures: list[dict[str, str]] = []
    bar = tqdm(total=len(todo), unit="img", desc=f"moderate {coll.name}", disable=not progress or None)
    with bar, job.recorded(lambda: {"failures": failures}):
        for start in range(0, len(todo), settings.batch_size):
            chunk = todo[start : start + settings.batch_size]
            images, ids, records = [], [], []
            for rid, uri, sha, rec in chunk:
                try:
                    images.append(reader.image(uri, sha))
                    ids.append(rid)
                    records.append(rec)
                except READ_ERRORS as exc:
                    failures.append({"id": str(rid), "path": str(uri), "error": str(exc)})
            results = moderator.check_images(images, records=records) if extra else moderator.check_images(images)
            save_results(catalog, coll.name, policy, moderator.model_ids, zip(ids, results, strict=True))
            for res in results:
                counts["decisions"][res.decision] = counts["decisions"].get(res.decision, 0) + 1
            counts["checked"] += len(results)
            counts["failed"] = len(failures)
            bar.update(len(chunk))
            job.progress(counts, start + len(chunk), failures=failures)
    job.succeed(counts, done=len(todo), failures=failures)
    return {"job_id": job.job_id, "collection": coll.name, "policy": policy.name, "version": policy.version, **counts,
            "failures": failures}  # fmt: skip
