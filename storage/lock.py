"""An inter-process writer lock per collection (``fcntl.flock``; released if the holder dies)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from blipsearch.errors import ConflictError


@contextlib.contextmanager
def writer_lock(path: Path, timeout: float = 600.0) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConflictError(
                        f"Another writer has held {path} for over {timeout:.0f}s; try again later."
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def exclusive_or_refuse(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block, or raise ConflictError at once if another
    process (or another open of it in this one) holds it. Released when the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConflictError(f"{what} is already running; wait for it to finish, then retry.") from None
        yield
    finally:
        os.close(fd)


def is_held(path: Path) -> bool:
    """True if some process (this one included, through another open) holds ``path``'s lock."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def reembed_lock_path(version_root: Path) -> Path:
    """The per-collection re-embed lock, beside the collection's version folders."""
    return version_root.parent / ".reembed.lock"
