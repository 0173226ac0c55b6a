"""Micro-batching: concurrent callers that arrive within a few milliseconds share one call.

``MicroBatcher(fn)`` runs ``fn(items) -> results`` on a worker thread. ``submit(item)`` blocks
the calling thread (never the event loop: API handlers run in a thread pool) until its result
is ready. While ``fn`` runs, new items queue up and form the next batch, so under load batches
grow by themselves. A batch waits at most ``wait_s`` for companions, and only for callers that
are already in flight: a lone caller never waits.

The queue is bounded: when it is full, ``submit`` raises OverloadedError (HTTP 503 with
Retry-After) at once instead of letting work pile up without limit.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from blipsearch.errors import OverloadedError
from blipsearch.limits import MAX_QUEUE, MICROBATCH_MAX_SIZE, MICROBATCH_WAIT_MS

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_size: int = MICROBATCH_MAX_SIZE,
        wait_s: float = MICROBATCH_WAIT_MS / 1000,
        max_queue: int = MAX_QUEUE,
        name: str = "batcher",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.fn = fn
        self.max_size = max_size
        self.wait_s = wait_s
        self.name = name
        self.on_batch = on_batch
        self._queue: queue.Queue[tuple[T, Future[R]] | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._inflight = 0  # callers inside submit(): queued, or in the batch being computed
        self._count_lock = threading.Lock()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, item: T, timeout: float | None = 120.0) -> R:
        self._ensure_started()
        fut: Future[R] = Future()
        with self._count_lock:
            self._inflight += 1
        try:
            try:
                self._queue.put_nowait((item, fut))
            except queue.Full:
                raise OverloadedError(
                    f"The {self.name} queue is full ({self._queue.maxsize} waiting); retry shortly.", retry_after=1
                ) from None
            return fut.result(timeout=timeout)
        finally:
            with self._count_lock:
                self._inflight -= 1

    def submit_many(self, items: Sequence[T], timeout: float | None = 120.0) -> list[R]:
        """Submit several items at once (they may share batches with each other and with
        other callers); results in input order. All or nothing: a full queue cancels the
        items already queued and raises OverloadedError."""
        self._ensure_started()
        futures: list[Future[R]] = []
        with self._count_lock:
            self._inflight += len(items)
        try:
            for item in items:
                fut: Future[R] = Future()
                try:
                    self._queue.put_nowait((item, fut))
                except queue.Full:
                    for queued in futures:
                        queued.cancel()
                    raise OverloadedError(
                        f"The {self.name} queue is full ({self._queue.maxsize} waiting); retry shortly.", retry_after=1
                    ) from None
                futures.append(fut)
            return [fut.result(timeout=timeout) for fut in futures]
        finally:
            with self._count_lock:
                self._inflight -= len(items)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    self._thread.start()

    def _next_batch(self, first: tuple[T, Future[R]]) -> tuple[list[tuple[T, Future[R]]], bool]:
        batch, stop = [first], False
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_size:
            if len(batch) >= self._inflight and self._queue.empty():
                break  # nobody else is waiting: do not delay a lone caller
            try:
                remaining = deadline - time.monotonic()
                nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                stop = True
                break
            batch.append(nxt)
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._next_batch(first)
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if live:
                if self.on_batch is not None:
                    self.on_batch(len(live))
                try:
                    results = self.fn([item for item, _ in live])
                    for (_, fut), res in zip(live, results, strict=True):
                        fut.set_result(res)
                except BaseException as exc:  # noqa: BLE001 - every waiter gets the failure
                    for _, fut in live:
                        fut.set_exception(exc)
            if stop:
                return
