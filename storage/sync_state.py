"""What ``sync`` last saw in a collection's folders: one entry per file, saved atomically.

``sync-state.json`` in the collection's folder maps each absolute file path to the stat it had
when it was hashed (size, mtime in ns, inode), its sha256, and why it failed to index (if it
did). A file whose stat is unchanged is not read again; the state is only a cache of the
folder, never of the records: a lost or stale state costs a re-hash, never a wrong record.
Several paths with one sha256 are the exact copies of one record (records are unique by hash).

An entry whose mtime is within the filesystem's timestamp granularity of the moment it was
stat'ed is "racy" (a file rewritten again within that granularity keeps its mtime): it is
re-hashed on the next run, as git does for racily clean index entries. The granularity is taken
as 2 s where mtimes are whole seconds (FAT, some network shares) and ``RACY_NS`` otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.atomic import atomic_write_bytes

STATE_NAME = "sync-state.json"
RACY_NS = 50_000_000  # above the coarse kernel clock tick (jiffies) of ext4, xfs, tmpfs
VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    size: int
    mtime_ns: int
    ino: int
    sha256: str
    failed: str | None = None  # the reason it did not index; retried when the file changes
    racy: bool = False

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.size, self.mtime_ns, self.ino)

    def same_stat(self, size: int, mtime_ns: int, ino: int) -> bool:
        return not self.racy and (self.size, self.mtime_ns, self.ino) == (size, mtime_ns, ino)

    def to_json(self) -> list[Any]:
        return [self.size, self.mtime_ns, self.ino, self.sha256, self.failed, self.racy]

    @classmethod
    def from_json(cls, row: list[Any]) -> FileEntry:
        size, mtime_ns, ino, sha, failed, racy = row
        return cls(int(size), int(mtime_ns), int(ino), str(sha), failed, bool(racy))


def is_racy(mtime_ns: int, now_ns: int) -> bool:
    window = 2_000_000_000 if mtime_ns % 1_000_000_000 == 0 else RACY_NS
    return now_ns - mtime_ns < window


def state_path(root: Path) -> Path:
    return root / STATE_NAME


def load(root: Path) -> dict[str, FileEntry]:
    """The saved entries (empty when none was saved, or the file is unreadable: a re-hash follows)."""
    try:
        raw = json.loads(state_path(root).read_bytes())
        return {p: FileEntry.from_json(r) for p, r in raw["files"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def save(root: Path, entries: dict[str, FileEntry]) -> None:
    body = {"version": VERSION, "files": {p: e.to_json() for p, e in sorted(entries.items())}}
    atomic_write_bytes(state_path(root), json.dumps(body, separators=(",", ":")).encode())


def copies(root: Path, shas: Iterable[str] | None = None) -> dict[str, list[str]]:
    """sha256 → the paths holding it, for hashes seen at two paths or more (exact copies)."""
    wanted = set(shas) if shas is not None else None
    by_sha: dict[str, list[str]] = {}
    for path, e in load(root).items():
        if e.failed is None and (wanted is None or e.sha256 in wanted):
            by_sha.setdefault(e.sha256, []).append(path)
    return {s: sorted(p) for s, p in by_sha.items() if len(p) > 1}
