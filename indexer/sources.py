"""Input discovery: files and folders (recursive), in a stable order."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from blipsearch.errors import InvalidInputError


def iter_files(paths: Sequence[str | Path]) -> Iterator[Path]:
    """Every regular file under ``paths``; hidden files and folders are skipped.

    Folders are walked in sorted order so re-runs see the same sequence. Symlinked files are
    followed; symlinked folders are not (no cycles).
    """
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            yield path.resolve()
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        full = Path(root) / name
                        if full.is_file():
                            yield full.resolve()
        else:
            raise InvalidInputError(f"Input path {str(path)!r} does not exist or is not a file or folder.")
