"""Tar shards as a uri kind: ``/abs/shard.tar#member`` names one member of a tar file."""

from __future__ import annotations

import tarfile
from pathlib import Path

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_tar(path: Path) -> bool:
    return path.name.lower().endswith(TAR_SUFFIXES)


def read_member(shard: Path, member: str, max_bytes: int) -> bytes:
    """One member's bytes (for reading a record back by its uri)."""
    with tarfile.open(shard, mode="r:*") as tar:
        try:
            info = tar.getmember(member)
        except KeyError:
            raise FileNotFoundError(f"{member} is not in {shard}") from None
        if info.size > max_bytes:
            raise ValueError(f"member is {info.size} bytes, over the {max_bytes}-byte limit")
        fh = tar.extractfile(info)
        if fh is None:
            raise FileNotFoundError(f"{member} in {shard} is not a regular file")
        return fh.read()
