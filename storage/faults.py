"""Fault injection for the crash tests: a process can kill itself (SIGKILL) at its Nth write step.

Every durable write step of the storage layer calls ``step``: a temp file written but not yet
renamed, a file renamed into place, a version link swapped, a catalog transaction committed.
Unset (always, outside the tests) it does nothing but one cached environment lookup.

* ``BLIPSEARCH_FAULT_KILL_AT=N``: the Nth step (from 1) SIGKILLs the process right after
  that step, as ``kill -9`` from outside would, with no cleanup, no ``finally``, no flush.
* ``BLIPSEARCH_FAULT_LOG=FILE``: each step appends its label to FILE, so a test first counts
  the steps of a run, then kills a fresh copy at each (or a sample) of them
  (tests/test_faults_kill.py).
"""

from __future__ import annotations

import os
import signal
import threading
from functools import cache

_lock = threading.Lock()
_count = 0


@cache
def _config() -> tuple[int | None, str | None]:
    raw = os.environ.get("BLIPSEARCH_FAULT_KILL_AT", "")
    return (int(raw) if raw.isdigit() else None), (os.environ.get("BLIPSEARCH_FAULT_LOG") or None)


def step(label: str) -> None:
    """One durable write step is done (``label`` says which)."""
    kill_at, log = _config()
    if kill_at is None and log is None:
        return
    global _count
    with _lock:
        _count += 1
        n = _count
        if log is not None:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"{n} {os.getpid()} {label}\n")
        if kill_at is not None and n == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
