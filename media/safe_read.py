"""Read a record's stored original back safely: the one way every reader of a stored ``uri``
gets its bytes (``/file``, thumbnails, re-ranking, captions, moderation, re-embedding).

A stored uri is trusted only as far as it still names what was indexed:

* every component of the path is walked with ``openat(..., O_NOFOLLOW)``, so a symbolic link
  anywhere on the path (swapped in after indexing) is refused, and the final component must be
  a regular file (``fstat`` of the descriptor that is then read: no check-then-open race);
* the bytes read must hash to the record's ``sha256``; otherwise the file changed since indexing.

A WebDataset member (``shard.tar#member``) gets the same checks on the tar file; the hash is of
the member's bytes. Server-owned links a uri may legitimately pass through (uploads are stored
through ``DATA_DIR/collections/<name>``, which follows re-embeds) are mapped to their real
folder by the caller (``aliases``) before the walk.

Imports only the standard library and ``blipsearch``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
from collections.abc import Mapping
from pathlib import Path

from blipsearch.errors import ImageDecodeError, SourceChangedError, SourceUnavailableError
from media.tar import is_tar, member_bytes

# Everything a reader of stored uris may need to catch to skip one record.
READ_ERRORS = (ImageDecodeError, SourceUnavailableError, SourceChangedError)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def _unavailable(what: str) -> SourceUnavailableError:
    return SourceUnavailableError(f"The stored original {what}.")


def open_regular(path: str | Path) -> int:
    """A read-only descriptor of the regular file at ``path``, reached without following any
    symbolic link. Raises SourceUnavailableError (gone, a link, not a regular file)."""
    p = Path(path)
    parts = p.parts
    if not parts:
        raise _unavailable("has no path")
    start, comps = (parts[0], parts[1:]) if p.is_absolute() else (".", parts)
    if not comps or any(c in ("..", ".") for c in comps):
        raise _unavailable("has an unusable path")
    try:
        fd = os.open(start, _DIR_FLAGS & ~os.O_NOFOLLOW)
    except OSError:
        raise _unavailable("cannot be reached") from None
    try:
        for comp in comps[:-1]:
            nxt = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        out = os.open(comps[-1], _FILE_FLAGS, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise _unavailable("is reached through a symbolic link or is not a regular file") from None
        if exc.errno == errno.ENOENT:
            raise _unavailable("is no longer there") from None
        raise _unavailable(f"cannot be opened ({errno.errorcode.get(exc.errno or 0, 'error')})") from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(out).st_mode):
        os.close(out)
        raise _unavailable("is not a regular file")
    return out


def _read_fd(fd: int, max_bytes: int) -> bytes:
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > max_bytes:
            raise ImageDecodeError(f"file is {size} bytes, over the {max_bytes}-byte limit", "too_large_file")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageDecodeError(f"file is over the {max_bytes}-byte limit", "too_large_file")
    return data


def _read_member(fd: int, member: str, max_bytes: int) -> bytes:
    with os.fdopen(fd, "rb") as fh:
        try:
            with tarfile.open(fileobj=fh, mode="r:*") as tar:
                return member_bytes(tar, member, max_bytes, _unavailable)
        except (tarfile.TarError, EOFError, OSError):
            raise _unavailable("is in a tar shard that can no longer be read") from None


def map_aliases(path: Path, aliases: Mapping[Path, Path]) -> Path:
    """``path`` with a leading server-owned link folder replaced by its real folder."""
    candidates = [path] if path.is_absolute() else [path, Path(os.path.abspath(path))]
    for cand in candidates:
        for link, real in aliases.items():
            if cand.is_relative_to(link):
                return Path(real) / cand.relative_to(link)
    return path


def read_verified(uri: str, sha256: str | None, max_bytes: int, *, aliases: Mapping[Path, Path] | None = None) -> bytes:
    """The bytes of a record's original at ``uri``, checked as the module doc says.

    Raises SourceUnavailableError (404: gone, a symlink, not a regular file), SourceChangedError
    (409: content differs from ``sha256``) or ImageDecodeError (``too_large_file``).
    """
    if not sha256:
        raise _unavailable("has no recorded sha256 to check it against")
    aliases = aliases or {}
    from media import remote_read  # object URLs and dataset rows: their own module, same checks

    if remote_read.handles(uri):
        return remote_read.read_stored(uri, sha256, max_bytes, lambda p: open_regular(map_aliases(p, aliases)))
    path = map_aliases(Path(uri), aliases)
    shard, sep, member = uri.rpartition("#")
    try:
        data = _read_fd(open_regular(path), max_bytes)
    except SourceUnavailableError:
        if not (sep and member and is_tar(shard)):
            raise
        data = _read_member(open_regular(map_aliases(Path(shard), aliases)), member, max_bytes)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise SourceChangedError("The stored original has changed since indexing; re-index it to serve it again.")
    return data
