"""Files, folders (recursive) and glob patterns, in a stable order."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from blipsearch.errors import InvalidInputError
from indexer.sources.base import Source, SourceItem

GLOB_CHARS = frozenset("*?[")


def is_glob(raw: str) -> bool:
    return any(c in GLOB_CHARS for c in raw)


def expand_glob(pattern: str) -> list[Path]:
    """Sorted matches of ``pattern`` (``**`` recurses); no match is an error, not a silent no-op."""
    matches = sorted(_glob_no_links(os.path.expanduser(pattern)))
    if not matches:
        raise InvalidInputError(f"The pattern {pattern!r} matches no file.")
    return [Path(m) for m in matches]


def _glob_no_links(pattern: str) -> list[str]:
    """``glob.glob(pattern, recursive=True)`` without following directory symlinks under ``**``
    (a symlink loop made glob's recursion endless): pathlib's walk, hidden names skipped as glob does."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if is_glob(part)), len(parts))
    if fixed == len(parts):
        return glob.glob(pattern)
    root, rel = Path(*parts[:fixed]) if fixed else Path("."), Path(*parts[fixed:])
    out = []
    for m in root.glob(str(rel)):
        tail = m.relative_to(root).parts
        if any(t.startswith(".") and not p.startswith(".") for t, p in zip(tail, rel.parts, strict=False)):
            continue
        out.append(str(m) if fixed else os.path.relpath(m))
    return out


def walk(path: Path) -> Iterator[Path]:
    """``path`` itself if a file, else every regular file under it; hidden entries are skipped.

    Folders are walked in sorted order so re-runs see the same sequence. Symlinked files are
    followed; symlinked folders are not (no cycles).
    """
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


def iter_files(paths: Sequence[str | Path]) -> Iterator[Path]:
    """Every regular file under ``paths`` (files, folders or glob patterns)."""
    for raw in paths:
        targets = expand_glob(str(raw)) if is_glob(str(raw)) and not Path(raw).exists() else [Path(raw).expanduser()]
        for target in targets:
            yield from walk(target)


class FilesSource(Source):
    """Image files: given directly, found under folders, or matched by glob patterns."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.files = list(iter_files(paths))  # listed up front: fails fast, and gives a total

    def __iter__(self) -> Iterator[SourceItem]:
        for path in self.files:
            yield SourceItem(str(path), path=path)

    def count(self) -> int:
        return len(self.files)
