"""Which process owns a running job, and whether it is still alive.

A job row alone cannot tell a running job from one whose process was killed with ``-9`` (no
``finally`` ran to mark it). The catalog records the owner of every job it sets running (or
queues): process id, host name, and the process's start time (``/proc/<pid>/stat`` field 22
plus the boot id, so a recycled pid does not pass for the owner). A reader of the jobs on the
same host marks jobs whose owner is gone ``interrupted`` (storage/catalog.py). Owners on
other hosts cannot be checked from here and are left alone.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class ProcessId:
    pid: int
    host: str
    started: str  # "<boot id>:<start ticks>", or "" where /proc is not available


def _start_token(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        ticks = fields[19]  # field 22 of the whole line
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
        return f"{boot}:{ticks}"
    except (OSError, IndexError, ValueError):
        return ""


@cache
def _host() -> str:
    return socket.gethostname()


def current() -> ProcessId:
    pid = os.getpid()
    return ProcessId(pid, _host(), _start_token(pid))


def is_local(owner: ProcessId) -> bool:
    return owner.host == _host()


def is_alive(owner: ProcessId) -> bool:
    """False only when ``owner`` (on this host) certainly no longer runs."""
    if not is_local(owner):
        return True
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    if owner.started:
        now = _start_token(owner.pid)
        if now and now != owner.started:
            return False  # the pid was reused by another process
    return True
