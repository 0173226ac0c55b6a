"""A time limit on one decode (``BLIPSEARCH_DECODE_TIMEOUT_S``), beside the pixel budget.

The pixel budget bounds the work of a well-formed file; a hostile or broken one can still make a
decoder (libheif, LibRaw, a PNG's zlib) run far longer than its size warrants. Python cannot stop
a C decoder from another thread, so the limit is enforced where the decode runs:

- in a decode worker *process* (indexer/decode_pool.py), by the kernel: a CPU-time interval
  timer (ITIMER_PROF) whose signal (SIGPROF, default action) ends the process once the decode
  has used ``seconds`` of CPU, counted from its start (not the wait in the pool's queue, nor
  time the process was not scheduled on a busy machine); the caller records the file's failure
  and the pool is replaced;
- in a *thread* (``run_with_deadline``), the caller stops waiting at the deadline and records the
  failure; the decode thread is left to finish on its own (bounded by the pixel budget) and its
  result is dropped.

Either way the file fails with reason ``decode_timeout`` and the job goes on.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TypeVar

from blipsearch.errors import ImageDecodeError

T = TypeVar("T")
REASON = "decode_timeout"


def timeout_error(seconds: float) -> ImageDecodeError:
    return ImageDecodeError(
        f"decoding took longer than the {seconds:g} s time limit (a hostile or broken file?; "
        "raise BLIPSEARCH_DECODE_TIMEOUT_S to allow it)",
        REASON,
    )


def run_with_deadline(fn: Callable[[], T], seconds: float | None) -> T:
    """``fn()`` in a daemon thread, waited for at most ``seconds`` (None or 0: no limit, run here)."""
    if not seconds:
        return fn()
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, as if raised here
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True, name="decode")
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise timeout_error(seconds)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def arm_process_alarm(seconds: float | None) -> None:
    """In a decode worker process: end this process if the decode that starts now uses more than
    ``seconds`` of CPU (SIGPROF's default action terminates it, even inside C code)."""
    if seconds:
        signal.signal(signal.SIGPROF, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_PROF, seconds)


def disarm_process_alarm() -> None:
    signal.setitimer(signal.ITIMER_PROF, 0)
