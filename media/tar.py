"""Tar shards as a uri kind: ``/abs/shard.tar#member`` names one member of a tar file (``%`` and
``#`` in the member name percent-encoded)."""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable
from pathlib import Path

from blipsearch.errors import ImageDecodeError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_ESCAPES = re.compile(r"%2[35]", re.I)


def is_tar(path: Path | str) -> bool:
    return str(path).lower().endswith(TAR_SUFFIXES)


def member_uri(shard: Path | str, name: str) -> str:
    """``shard#name`` with ``%`` and ``#`` in the member name percent-encoded, so that splitting
    the uri at its last ``#`` gives the shard back and the name decodes exactly."""
    return f"{shard}#{name.replace('%', '%25').replace('#', '%23')}"


def member_names(member: str) -> list[str]:
    """The tar member names a uri's member part may stand for: the decoded name first, then the
    part as written (uris stored before member names were encoded hold the raw name)."""
    decoded = _ESCAPES.sub(lambda m: "#" if m.group(0) == "%23" else "%", member)
    return [decoded] if decoded == member else [decoded, member]


def get_member(tar: tarfile.TarFile, member: str) -> tarfile.TarInfo:
    """The TarInfo a uri's member part names (KeyError when the shard has none of its names)."""
    for name in member_names(member):
        try:
            return tar.getmember(name)
        except KeyError:
            continue
    raise KeyError(member)


def member_bytes(tar: tarfile.TarFile, member: str, max_bytes: int, unavailable: Callable[[str], Exception]) -> bytes:
    """The bytes of the regular member ``member`` names (at most ``max_bytes`` + 1 read, so a
    caller sees an overflow); ``unavailable(why)`` is raised when it is gone or not a file, and
    ImageDecodeError ``too_large_file`` when the header says it is over ``max_bytes``."""
    try:
        info = get_member(tar, member)
    except KeyError:
        raise unavailable("is no longer in its tar shard") from None
    if not info.isfile():
        raise unavailable("is not a regular tar member")
    if info.size > max_bytes:
        raise ImageDecodeError(f"member is {info.size} bytes, over the {max_bytes}-byte limit", "too_large_file")
    got = tar.extractfile(info)
    if got is None:
        raise unavailable("is not a regular tar member")
    return got.read(max_bytes + 1)
