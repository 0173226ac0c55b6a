"""Caption enrichment of an existing image collection: resumable and idempotent.

Processes only records without a caption from the chosen model, shard by shard, and commits
every ``commit_every`` captions by atomically rewriting the shard's caption columns
(Collection.update_columns); embeddings are never touched. A killed run keeps what it
committed; a re-run picks up the rest; a run with nothing to do does nothing.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from blipsearch.errors import InvalidInputError
from media.decode import decode_image
from media.safe_read import READ_ERRORS, read_verified
from models.captioner import Captioner, Decoding
from storage.collection import Collection

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


def caption_collection(
    coll: Collection,
    captioner: Captioner,
    decoding: Decoding = Decoding(),
    *,
    commit_every: int = 64,
    max_pixels: int = 100_000_000,
    max_bytes: int = 256 * 1024 * 1024,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    if coll.manifest.kind != "images":
        raise InvalidInputError(f"{coll.name!r} is a text collection; only image collections get captions.")
    work = _pending(coll, captioner.model_id)
    report: dict[str, Any] = {
        "collection": coll.name,
        "caption_model": captioner.model_id,
        "captioned": 0,
        "failed": 0,
        "failures": [],
    }

    aliases = coll.uri_aliases()

    def load(item: tuple[int, str, str]) -> tuple[int, Any]:
        rid, uri, sha = item
        try:
            img = decode_image(read_verified(uri, sha, max_bytes, aliases=aliases), max_pixels).image
            return rid, captioner.preprocess([img])[0]
        except READ_ERRORS as exc:
            return rid, exc

    total = sum(len(t) for _, t in work)
    with (
        tqdm(total=total, unit="img", desc=f"caption {coll.name}", disable=not progress or None) as bar,
        ThreadPoolExecutor(workers) as pool,
    ):
        for shard_file, todo in work:
            for start in range(0, len(todo), commit_every):
                loaded = list(pool.map(load, todo[start : start + commit_every]))
                ok = [(rid, px) for rid, px in loaded if not isinstance(px, Exception)]
                for rid, err in loaded:
                    if isinstance(err, Exception):
                        report["failed"] += 1
                        report["failures"].append({"id": rid, "error": str(err)})
                updates: dict[int, dict[str, Any]] = {}
                for b in range(0, len(ok), captioner.batch_size):
                    chunk = ok[b : b + captioner.batch_size]
                    texts = captioner.caption_pixels(np.stack([px for _, px in chunk]), decoding)
                    for (rid, _), text in zip(chunk, texts, strict=True):
                        updates[rid] = {"caption": text, "caption_model": captioner.model_id}
                coll.update_columns(shard_file, updates)
                report["captioned"] += len(updates)
                bar.update(len(loaded))
    return report
