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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict
from typing import Any, TypeVar

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from blipsearch.errors import InvalidInputError
from blipsearch.limits import CAPTION_COMMIT_EVERY
from media.stored import READ_ERRORS, ImageLimits, StoredImages
from models.captioners import Captioner, Decoding
from storage.catalog import Catalog
from storage.collection import Collection
from storage.job_run import JobRun

log = logging.getLogger(__name__)
T = TypeVar("T")


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

    def load(item: tuple[int, str, str]) -> tuple[int, Any]:
        rid, uri, sha = item
        try:
            return rid, captioner.preprocess([reader.image(uri, sha)])[0]
        except READ_ERRORS as exc:
            return rid, exc

    def counts() -> dict[str, Any]:
        return {"captioned": report["captioned"], "failed": report["failed"]}

    with (
        tqdm(total=total, unit="img", desc=f"caption {coll.name}", disable=not progress or None) as bar,
        ThreadPoolExecutor(workers) as pool,
        job.recorded(lambda: {"failures": report["failures"]}) if job else nullcontext(),
    ):
        for shard_file, chunk in _chunks(work, commit_every):
            loaded = list(pool.map(load, chunk))
            ok = [(rid, px) for rid, px in loaded if not isinstance(px, Exception)]
            for rid, err in loaded:
                if isinstance(err, Exception):
                    report["failed"] += 1
                    report["failures"].append({"id": rid, "error": str(err)})
            updates: dict[int, dict[str, Any]] = {}
            for b in range(0, len(ok), captioner.batch_size):
                part = ok[b : b + captioner.batch_size]
                texts = captioner.caption_pixels(np.stack([px for _, px in part]), decoding)
                for (rid, _), text in zip(part, texts, strict=True):
                    updates[rid] = {"caption": text, "caption_model": captioner.model_id}
            coll.update_columns(shard_file, updates)
            report["captioned"] += len(updates)
            bar.update(len(loaded))
            if job:
                job.progress(counts(), bar.n, failures=report["failures"])
    if job:
        job.succeed(counts(), done=total, failures=report["failures"])
    return report


def _chunks(work: list[tuple[str, list[T]]], size: int) -> Iterator[tuple[str, list[T]]]:
    """Each shard's pending records, ``size`` at a time (one commit each; also the metadata
    backfill's, indexer/metadata_backfill.py)."""
    for shard_file, todo in work:
        for start in range(0, len(todo), size):
            yield shard_file, todo[start : start + size]
