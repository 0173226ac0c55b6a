"""Read a record's image back from its ``uri``: a file path, or ``shard.tar#member``."""

from __future__ import annotations

import tarfile
from pathlib import Path

from blipsearch.errors import ImageDecodeError
from media import remote_read
from media.decode import RawFile, read_file, read_source
from media.tar import is_tar, read_member


def split_tar_uri(uri: str) -> tuple[Path, str] | None:
    """(shard, member) when ``uri`` names a tar member, else None."""
    shard, sep, member = uri.rpartition("#")
    if sep and member and is_tar(Path(shard)) and not Path(uri).exists():
        return Path(shard), member
    return None


def read_uri(uri: str, max_bytes: int) -> RawFile:
    """The bytes at ``uri``. Raises ImageDecodeError (reason ``unreadable``/``too_large_file``)."""
    if remote_read.handles(uri):  # object URLs, dataset rows
        return read_source(uri, None, remote_read.read_unverified(uri, max_bytes), max_bytes)
    tar = split_tar_uri(uri)
    if tar is None:
        return read_file(Path(uri), max_bytes)
    try:
        data = read_member(tar[0], tar[1], max_bytes)
    except ValueError as exc:
        raise ImageDecodeError(str(exc), "too_large_file") from None
    except (OSError, EOFError) as exc:
        raise ImageDecodeError(f"unreadable: {exc}", "unreadable") from None
    except tarfile.TarError as exc:
        raise ImageDecodeError(f"unreadable tar member: {exc}", "unreadable") from None
    return read_source(uri, None, data, max_bytes)
