"""The loop of a column enrichment job over an existing collection (captions, capture metadata).

Pending records come per shard; each ``commit_every`` of them are loaded in a thread pool (an
exception from ``load`` is that record's failure, with its message), turned into column updates
by ``apply``, and committed by rewriting that shard's columns atomically
(``Collection.update_columns``; embeddings untouched). After each commit the job's counts and
failures are recorded, so a killed run keeps what it committed and a re-run does the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any, TypeVar

from tqdm import tqdm

from storage.collection import Collection
from storage.job_run import JobRun

T = TypeVar("T")
V = TypeVar("V")


def chunks(work: Sequence[tuple[str, list[T]]], size: int) -> Iterator[tuple[str, list[T]]]:
    """Each shard's pending records, ``size`` at a time (one commit each)."""
    for shard_file, todo in work:
        for start in range(0, len(todo), size):
            yield shard_file, todo[start : start + size]


def run_column_job(
    coll: Collection,
    work: Sequence[tuple[str, list[T]]],
    load: Callable[[T], tuple[int, V | Exception]],
    apply: Callable[[list[tuple[int, V]]], dict[int, dict[str, Any]]],
    *,
    report: dict[str, Any],
    counts: Callable[[], dict[str, Any]],
    desc: str,
    commit_every: int,
    workers: int,
    progress: bool,
    job: JobRun | None,
) -> None:
    """Run the job over ``work``; ``report["failed"]`` / ``report["failures"]`` gather the
    records whose ``load`` returned an exception. ``apply`` gets the loaded (id, value) pairs of
    one chunk and returns the updates to commit (it may count into ``report`` as it goes)."""
    total = sum(len(t) for _, t in work)
    with (
        tqdm(total=total, unit="img", desc=desc, disable=not progress or None) as bar,
        ThreadPoolExecutor(workers) as pool,
        job.recorded(lambda: {"failures": report["failures"]}) if job else nullcontext(),
    ):
        for shard_file, chunk in chunks(work, commit_every):
            ok: list[tuple[int, V]] = []
            for rid, value in pool.map(load, chunk):
                if isinstance(value, Exception):
                    report["failed"] += 1
                    report["failures"].append({"id": rid, "error": str(value)})
                else:
                    ok.append((rid, value))
            coll.update_columns(shard_file, apply(ok))
            bar.update(len(chunk))
            if job:
                job.progress(counts(), bar.n, failures=report["failures"])
    if job:
        job.succeed(counts(), done=total, failures=report["failures"])
