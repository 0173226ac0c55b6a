"""Crash-safe file replacement: write to a temp file in the same folder, fsync, rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from blipsearch.errors import StorageFullError, disk_full_error, is_disk_full
from storage import faults


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp path next to ``final``; on success it is fsynced and renamed over ``final``.

    A crash at any point leaves either the old file or the new one, never a partial file;
    leftover ``.tmp`` files are swept by the collection's writer on its next open.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        faults.step(f"written {final.name}")
        os.replace(tmp, final)
        fsync_dir(final.parent)
        faults.step(f"renamed {final.name}")
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if is_disk_full(exc) and not isinstance(exc, StorageFullError):
            raise disk_full_error(exc) from exc
        raise


def atomic_write_bytes(final: Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def atomic_write_with(final: Path, writer: Callable[[Path], None]) -> None:
    with atomic_path(final) as tmp:
        writer(tmp)
