"""Hugging Face ``imagefolder`` layouts: image files plus ``metadata.jsonl`` / ``metadata.csv``.

A metadata file applies to the images in its folder and below: its ``file_name`` column is
the image's path relative to the metadata file's folder; every other column goes into the
record's metadata. Images with no metadata row are indexed with none; a row naming a missing
image, or a path leaving the folder (``..``, absolute), is a per-item failure. Only files with
an image extension are indexed (the metadata files themselves are not images).
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections.abc import Iterator
from typing import Any

from blipsearch.errors import InvalidInputError
from indexer.sources.base import IMAGE_EXTENSIONS, Source, SourceItem
from indexer.sources.tree import Tree
from media.objects import scrub

METADATA_NAMES = ("metadata.jsonl", "metadata.csv")


def metadata_files(files: dict[str, int]) -> list[str]:
    return [p for p in files if posixpath.basename(p) in METADATA_NAMES]


def _rows(tree: Tree, path: str) -> list[dict[str, Any]]:
    text = tree.read_bytes(path).decode("utf-8-sig", "replace")
    if path.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(text)))
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InvalidInputError(f"{scrub(tree.uri(path))!r} line {n} is not JSON: {exc}") from None
            if not isinstance(row, dict):
                raise InvalidInputError(f"{scrub(tree.uri(path))!r} line {n} is not a JSON object.")
            rows.append(row)
    return rows


class ImageFolderSource(Source):
    def __init__(self, tree: Tree, files: dict[str, int]) -> None:
        self.tree = tree
        self.files = files
        self.meta: dict[str, dict[str, Any]] = {}
        self.bad: list[SourceItem] = []
        for mf in metadata_files(files):
            folder = posixpath.dirname(mf)
            rows = _rows(tree, mf)
            if rows and "file_name" not in rows[0]:
                raise InvalidInputError(f"{scrub(tree.uri(mf))!r} has no file_name column.")
            for row in rows:
                name = str(row.get("file_name") or "")
                meta = {k: v for k, v in row.items() if k != "file_name"}
                full = posixpath.normpath(posixpath.join(folder, name)) if name else ""
                if not name or name.startswith("/") or not full.startswith(folder.rstrip("/") + "/"):
                    self.bad.append(SourceItem(f"{tree.uri(mf)}#{name}", meta=meta, error="unusable file_name"))
                elif full not in files:
                    self.bad.append(
                        SourceItem(tree.uri(full), meta=meta, error=f"listed in {posixpath.basename(mf)} but missing")
                    )
                else:
                    self.meta[full] = meta
        self.images = [p for p in files if posixpath.splitext(p)[1].lower().lstrip(".") in IMAGE_EXTENSIONS]

    def __iter__(self) -> Iterator[SourceItem]:
        for path in self.images:
            yield self.tree.item(path, self.files[path], dict(self.meta.get(path, {})))
        yield from self.bad

    def count(self) -> int:
        return len(self.images) + len(self.bad)
