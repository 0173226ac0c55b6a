"""Objects read ahead of the decoder: a bounded pool of concurrent GETs in front of the pipeline.

An object item (``s3://bucket/key``, no bytes yet, not already committed) is fetched by one
of ``threads`` threads as soon as it is listed, so a store's per-request latency overlaps
with decoding and the model instead of adding to them. What is read ahead is bounded twice:
at most ``window`` items and ``budget`` bytes (the listed sizes; an unlisted size counts as
``max_bytes``) are in flight or waiting. Bytes are held in memory only, never staged on disk.

Items come out in the order they went in, with ``data`` filled, or with ``error``/``reason``
(``missing``, ``forbidden``, ``timeout``, ``unreachable``, ``too_large_file``, ``bad_key``):
a per-item failure the pipeline records. When ``dead_after`` reads in a row fail because the
store does not answer (``unreachable``/``timeout``), the store is taken to be down: the run
stops with one line (InvalidInputError) instead of failing every remaining object after its
retries; committed shards are kept and a re-run resumes (committed objects are not read again).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from blipsearch.errors import ImageDecodeError, InvalidInputError
from indexer.sources.base import SourceItem
from media.objects import ObjectOptions, is_object_url, read_object

THREADS = 8  # concurrent GETs: enough to hide a store's latency behind a 2-thread decoder
WINDOW = 32  # items read ahead at most
BUDGET = 128 << 20  # bytes read ahead at most
DEAD_AFTER = 8  # reads in a row that found no store: the store is down
_DEAD = frozenset({"unreachable", "timeout"})


def _wanted(item: SourceItem) -> bool:
    return (
        item.path is None
        and item.data is None
        and item.error is None
        and item.sha256 is None  # committed and unchanged: never read again
        and "#" not in item.uri  # tar members and dataset rows carry their bytes already
        and is_object_url(item.uri)
    )


def prefetch_objects(
    items: Iterable[SourceItem],
    max_bytes: int,
    options: ObjectOptions | None = None,
    *,
    threads: int = THREADS,
    window: int = WINDOW,
    budget: int = BUDGET,
    dead_after: int = DEAD_AFTER,
) -> Iterator[SourceItem]:
    opts = options or ObjectOptions.from_env()
    pending: deque[tuple[SourceItem, Future[bytes] | None, int]] = deque()
    held = 0
    dead_run = 0
    pool = ThreadPoolExecutor(threads, thread_name_prefix="prefetch")

    def finish(entry: tuple[SourceItem, Future[bytes] | None, int]) -> SourceItem:
        nonlocal held, dead_run
        item, fut, cost = entry
        held -= cost
        if fut is None:
            return item
        try:
            item.data = fut.result()
            dead_run = 0
        except ImageDecodeError as exc:
            item.error, item.reason = str(exc), exc.reason
            dead_run = dead_run + 1 if exc.reason in _DEAD else 0
            if dead_run >= dead_after:
                raise InvalidInputError(
                    f"The object store stopped answering ({dead_run} reads in a row: {exc.reason}); the run "
                    "stopped. Committed images are kept: run the same command again to resume."
                ) from None
        return item

    try:
        for item in items:
            fut: Future[bytes] | None = None
            cost = 0
            if _wanted(item):
                cost = min(item.size if item.size is not None else max_bytes, max_bytes)
                fut = pool.submit(read_object, item.uri, max_bytes, opts, item.size)
            pending.append((item, fut, cost))
            held += cost
            while pending and (len(pending) > window or held > budget):
                yield finish(pending.popleft())
        while pending:
            yield finish(pending.popleft())
    finally:
        for _, fut, _ in pending:
            if fut is not None:
                fut.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
