"""PDQ hashes for the records of an existing image collection: resumable and idempotent.

Records without a ``pdq_hash`` (indexed before the column existed, or where pdqhash was not
installed) are read back (sha256-verified), fully decoded and hashed; every ``commit_every``
hashes the shard's ``pdq_hash`` / ``pdq_quality`` columns are rewritten atomically
(Collection.update_columns; embeddings untouched). A killed run keeps what it committed, a
re-run hashes only the rest, and a run with nothing to do writes nothing. Unreadable images
are reported as failures (and retried by the next run).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow.parquet as pq
from tqdm import tqdm

from blipsearch.errors import InvalidInputError
from blipsearch.limits import MAX_IMAGE_PIXELS
from media.decode import decode_image
from media.pdq import PdqHash, pdq_hash, require
from media.safe_read import READ_ERRORS, read_verified
from storage.collection import Collection


def _pending(coll: Collection) -> list[tuple[str, list[tuple[int, str, str]]]]:
    out = []
    for shard in coll.manifest.shards:
        path = coll.shard_path(shard)
        has = "pdq_hash" in pq.read_schema(path).names
        t = pq.read_table(path, columns=["id", "uri", "sha256", *(["pdq_hash"] if has else [])]).to_pylist()
        todo = [
            (r["id"], r["uri"], r["sha256"]) for r in t if r.get("pdq_hash") is None and not shard.is_deleted(r["id"])
        ]
        if todo:
            out.append((shard.file, todo))
    return out


def backfill_pdq(
    coll: Collection,
    *,
    commit_every: int = 256,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_bytes: int = 256 * 1024 * 1024,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    if coll.manifest.kind != "images":
        raise InvalidInputError(f"{coll.name!r} is a text collection; only image collections get PDQ hashes.")
    require()  # a missing pdqhash fails before anything is read
    work = _pending(coll)
    report: dict[str, Any] = {"collection": coll.name, "hashed": 0, "failed": 0, "failures": []}
    aliases = coll.uri_aliases()

    def load(item: tuple[int, str, str]) -> tuple[int, PdqHash | Exception]:
        rid, uri, sha = item
        try:
            img = decode_image(read_verified(uri, sha, max_bytes, aliases=aliases), max_pixels).image
            return rid, pdq_hash(img)
        except READ_ERRORS as exc:
            return rid, exc

    total = sum(len(t) for _, t in work)
    with (
        tqdm(total=total, unit="img", desc=f"pdq {coll.name}", disable=not progress or None) as bar,
        ThreadPoolExecutor(workers) as pool,
    ):
        for shard_file, todo in work:
            for start in range(0, len(todo), commit_every):
                updates: dict[int, dict[str, Any]] = {}
                for rid, out in pool.map(load, todo[start : start + commit_every]):
                    if isinstance(out, Exception):
                        report["failed"] += 1
                        report["failures"].append({"id": rid, "error": str(out)})
                    else:
                        updates[rid] = {"pdq_hash": out.hex, "pdq_quality": out.quality}
                coll.update_columns(shard_file, updates)
                report["hashed"] += len(updates)
                bar.update(min(commit_every, len(todo) - start))
    report["already_hashed"] = _count_hashed(coll) - report["hashed"]
    return report


def _count_hashed(coll: Collection) -> int:
    col = coll.read_table(["pdq_hash"]).column("pdq_hash")
    return len(col) - col.null_count
