"""A text file listing image paths, one per line (``#`` comments and blank lines ignored).

Relative paths are relative to the list's own folder, so a list travels with its images.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from blipsearch.errors import InvalidInputError
from indexer.sources.base import Source, SourceItem
from indexer.sources.manifest import object_entry
from media.objects import is_remote


class FileListSource(Source):
    def __init__(self, path: Path) -> None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"Cannot read the file list {str(path)!r}: {exc}") from exc
        base = path.resolve().parent
        self.files: list[Path | str] = []  # a path; str: an object URL, or "path#lineN" of a line holding a NUL
        self.bad: set[str] = set()
        for number, line in enumerate(lines, 1):
            entry = line.strip()
            if "\0" in entry:  # no file has such a name: a per-line failure, not a crash
                marker = f"{path}#line{number}"
                self.bad.add(marker)
                self.files.append(marker)
            elif entry and not entry.startswith("#"):
                if is_remote(entry):
                    self.files.append(entry)
                    continue
                p = Path(entry).expanduser()
                self.files.append((p if p.is_absolute() else base / p).resolve())

    def __iter__(self) -> Iterator[SourceItem]:
        # A listed path that is missing is the pipeline's to report (reason "unreadable"),
        # like any other bad input: one bad line does not stop a million-image job.
        for path in self.files:
            if isinstance(path, str) and path in self.bad:
                yield SourceItem(path, error="the line holds a NUL byte: not a file path")
            else:
                yield object_entry(path) if isinstance(path, str) else SourceItem(str(path), path=path)

    def count(self) -> int:
        return len(self.files)
