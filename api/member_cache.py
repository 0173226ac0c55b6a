"""Extracted members of compressed tar shards, cached on disk for ``/file``.

A member of a ``.tar.gz`` (``.tgz``, ``.tar.bz2``, ``.tar.xz``) cannot be reached without
decompressing the shard up to it, so serving one from the archive costs up to the whole shard
each time. The first read extracts it (through media/stored.py, with every check there); the
bytes are then kept in ``<collection version>/members/``, and a later read costs one member.

* The key is the shard's path, size and modification time plus the member name: a shard that is
  replaced or rewritten is a new key, and each read still opens the shard itself (no symbolic
  link anywhere on its path, a regular file) without decompressing it, so a shard that is gone
  or swapped for a link answers as before.
* A cached file is written atomically (storage/atomic.py), opened without following symbolic
  links, and served only if its bytes hash to the record's sha256; anything else is dropped
  and the member is extracted again.
* The folder is bounded (``max_bytes``): past it, the least recently served members go first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from blipsearch.errors import SourceUnavailableError
from media.safe_read import map_aliases, open_regular
from media.tar import is_tar
from storage.atomic import atomic_write_bytes

MEMBER_CACHE_DIR = "members"
MEMBER_CACHE_BYTES = 512 << 20  # per collection version
COMPRESSED_TARS = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_STALE_TMP_S = 3600.0  # a temp file this old is a killed writer's leftover
_evict_lock = threading.Lock()


def compressed_member(uri: str | None) -> tuple[str, str] | None:
    """(shard, member) when ``uri`` names a member of a compressed local tar shard, else None."""
    if not uri or "://" in uri:
        return None
    shard, sep, member = uri.rpartition("#")
    if not (sep and member and is_tar(shard) and shard.lower().endswith(COMPRESSED_TARS)):
        return None
    return shard, member


class MemberCache:
    def __init__(self, folder: Path, aliases: Mapping[Path, Path], max_bytes: int = MEMBER_CACHE_BYTES) -> None:
        self.folder = folder
        self.aliases = aliases
        self.max_bytes = max_bytes

    def _key(self, shard: str, member: str) -> str | None:
        """The cache key, or None when the shard cannot be opened (the reader says why)."""
        try:
            fd = open_regular(map_aliases(Path(shard), self.aliases))
        except SourceUnavailableError:
            return None
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        raw = f"{shard}\0{st.st_size}\0{st.st_mtime_ns}\0{member}".encode("utf-8", "surrogateescape")
        return hashlib.sha256(raw).hexdigest()

    def read(self, uri: str, sha256: str | None, max_bytes: int, extract: Callable[[], bytes]) -> bytes:
        """The member's verified bytes: from the cache, else ``extract()`` (then cached)."""
        found = compressed_member(uri)
        if found is None or not sha256:
            return extract()
        key = self._key(*found)
        if key is None:
            return extract()
        path = self.folder / f"{key}.bin"
        cached = self._cached(path, sha256, max_bytes)
        if cached is not None:
            return cached
        data = extract()
        if len(data) <= self.max_bytes:
            with contextlib.suppress(OSError):  # a cache that cannot be written never fails a read
                atomic_write_bytes(path, data)
                self._evict(keep=path)
        return data

    @staticmethod
    def _cached(path: Path, sha256: str, max_bytes: int) -> bytes | None:
        try:
            fd = open_regular(path)
        except SourceUnavailableError:
            return None
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes or hashlib.sha256(data).hexdigest() != sha256:
            path.unlink(missing_ok=True)  # not what the record holds: extract it again
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently served: evicted last
        return data

    def _evict(self, keep: Path) -> None:
        """Remove the least recently served members until the folder is within ``max_bytes``."""
        with _evict_lock:
            entries = []
            now = time.time()
            for entry in os.scandir(self.folder):
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                if entry.name.endswith(".tmp"):
                    if now - st.st_mtime > _STALE_TMP_S:
                        Path(entry.path).unlink(missing_ok=True)
                    continue
                entries.append((st.st_mtime, st.st_size, Path(entry.path)))
            total = sum(size for _, size, _ in entries)
            for _, size, p in sorted(entries):
                if total <= self.max_bytes:
                    break
                if p != keep:
                    p.unlink(missing_ok=True)
                    total -= size
