"""Caption enrichment of an existing image collection: a resumable, idempotent catalog job.

Processes only records without a caption from the chosen model, shard by shard, and commits
every ``commit_every`` captions by atomically rewriting the shard's caption columns
(Collection.update_columns); embeddings are never touched. A killed run keeps what it
committed; a re-run (or ``blipsearch jobs resume ID``) picks up the rest; a run with nothing to
do does nothing. With a catalog, the run is a job of kind ``caption`` (``jobs list`` shows its
progress; ``jobs cancel`` stops it after the current commit).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from blipsearch.errors import InvalidInputError
from blipsearch.limits import CAPTION_COMMIT_EVERY
from indexer.column_job import run_column_job
from media.stored import READ_ERRORS, ImageLimits, StoredImages
from models.captioners import Captioner, Decoding
from storage.catalog import Catalog
from storage.collection import Collection
from storage.job_run import JobRun

log = logging.getLogger(__name__)


def _pending(coll: Collection, model_id: str) -> list[tuple[str, list[tuple[int, str, str]]]]:
    out = []
    for shard in coll.manifest.shards:
        t = pq.read_table(coll.shard_path(shard), columns=["id", "uri", "sha256", "caption", "caption_model"])
        t = t.to_pylist()
        todo = [
            (r["id"], r["uri"], r["sha256"])
            for r in t
            if (r["caption"] is None or r["caption_model"] != model_id) and not shard.is_deleted(r["id"])
        ]
        if todo:
            out.append((shard.file, todo))
    return out


def caption_job_settings(captioner: Captioner, decoding: Decoding) -> dict[str, Any]:
    """What a caption job records, enough for ``jobs resume`` to run it again."""
    return {"caption_model": captioner.model_id, **asdict(decoding)}


def caption_collection(
    coll: Collection,
    captioner: Captioner,
    decoding: Decoding = Decoding(),
    *,
    limits: ImageLimits = ImageLimits(),
    commit_every: int = CAPTION_COMMIT_EVERY,
    workers: int = 2,
    progress: bool = True,
    catalog: Catalog | None = None,
    job_id: str | None = None,
) -> dict[str, Any]:
    """Caption every record of ``coll`` lacking a caption from ``captioner``. With ``catalog``,
    as a ``caption`` job (``job_id``: an existing one to resume)."""
    if coll.manifest.kind != "images":
        raise InvalidInputError(f"{coll.name!r} is a text collection; only image collections get captions.")
    work = _pending(coll, captioner.model_id)
    total = sum(len(t) for _, t in work)
    report: dict[str, Any] = {
        "collection": coll.name,
        "caption_model": captioner.model_id,
        "captioned": 0,
        "failed": 0,
        "failures": [],
    }
    job = None
    if catalog is not None:
        settings = caption_job_settings(captioner, decoding)
        job = JobRun.start_or_resume(catalog, job_id, "caption", coll.name, captioner.model_id, settings, total=total)
        report["job_id"] = job.job_id
    reader = StoredImages(coll.uri_aliases(), limits)

    def load(item: tuple[int, str, str]) -> tuple[int, np.ndarray | Exception]:
        rid, uri, sha = item
        try:
            return rid, captioner.preprocess([reader.image(uri, sha)])[0]
        except READ_ERRORS as exc:
            return rid, exc

    def counts() -> dict[str, Any]:
        return {"captioned": report["captioned"], "failed": report["failed"]}

    def apply(ok: list[tuple[int, np.ndarray]]) -> dict[int, dict[str, Any]]:
        updates: dict[int, dict[str, Any]] = {}
        for b in range(0, len(ok), captioner.batch_size):
            part = ok[b : b + captioner.batch_size]
            texts = captioner.caption_pixels(np.stack([px for _, px in part]), decoding)
            for (rid, _), text in zip(part, texts, strict=True):
                updates[rid] = {"caption": text, "caption_model": captioner.model_id}
        report["captioned"] += len(updates)
        return updates

    run_column_job(
        coll,
        work,
        load,
        apply,
        report=report,
        counts=counts,
        desc=f"caption {coll.name}",
        commit_every=commit_every,
        workers=workers,
        progress=progress,
        job=job,
    )
    return report
