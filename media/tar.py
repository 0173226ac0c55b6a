"""Tar shards as a uri kind: ``/abs/shard.tar#member`` names one member of a tar file."""

from __future__ import annotations

from pathlib import Path

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_tar(path: Path | str) -> bool:
    return str(path).lower().endswith(TAR_SUFFIXES)
