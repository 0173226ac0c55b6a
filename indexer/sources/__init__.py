"""Input sources for indexing jobs: one module per kind, behind ``Source`` (base.py).

``open_sources`` turns command-line inputs into sources:

* a folder, an image file, or a glob pattern (``photos/**/*.jpg``): ``FilesSource``;
* ``*.txt`` / ``*.lst``: a file list (``FileListSource``);
* ``*.csv`` / ``*.parquet``: a manifest with a path column and metadata columns;
* ``*.tar`` (``.tar.gz``, ...): a WebDataset-style shard (globs and brace lists of shards too);
* object URLs, dataset layouts and files with image bytes, ``pipe:`` shards: indexer/sources/bulk.py.

``input_format`` forces one kind for every input instead of guessing by extension.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from blipsearch.errors import InvalidInputError
from indexer.sources.base import Source, SourceItem
from indexer.sources.bulk import BULK_FORMATS, BulkOptions, open_bulk, remote_item, under_prefixes
from indexer.sources.filelist import FileListSource
from indexer.sources.files import FilesSource, expand_glob, is_glob, iter_files
from indexer.sources.manifest import ManifestSource
from indexer.sources.shardlists import MAX_NAMES, expand
from indexer.sources.webdataset import WebDatasetSource
from media.tar import is_tar

FORMATS = ("auto", "files", "list", "manifest", "webdataset", *BULK_FORMATS)
__all__ = ["FORMATS", "Source", "SourceItem", "Sources", "iter_files", "open_sources"]


def _kind(path: Path, input_format: str) -> str:
    if input_format != "auto":
        return input_format
    name = path.name.lower()
    if path.is_file():
        if name.endswith((".txt", ".lst")):
            return "list"
        if name.endswith((".csv", ".parquet")):
            return "manifest"
        if is_tar(path):
            return "webdataset"
    return "files"


class Sources(Source):
    """Several sources, one after the other. With ``roots``, an item whose file lies outside
    them (a file list or manifest naming other paths) is a recorded failure, never read; a
    ``str`` root is an object-store prefix (``s3://bucket/prefix``) confining object items."""

    def __init__(self, parts: list[Source], roots: Sequence[Path | str] | None = None) -> None:
        self.parts = parts
        paths = [r for r in roots or () if not isinstance(r, str)]
        self.roots = [r.expanduser().resolve() for r in paths] if roots is not None else None
        self.prefixes = [r for r in roots or () if isinstance(r, str)]

    def __iter__(self) -> Iterator[SourceItem]:
        for part in self.parts:
            for item in part:
                if self.roots is not None and item.path is not None and item.error is None:
                    real = item.path.resolve()
                    if not any(real == r or real.is_relative_to(r) for r in self.roots):
                        item = SourceItem(item.uri, meta=item.meta, error="outside the import roots")
                elif self.roots is not None and item.error is None and remote_item(item):
                    if not under_prefixes(item.uri, self.prefixes):
                        item = SourceItem(item.uri, meta=item.meta, error="outside the import roots")
                yield item

    def count(self) -> int | None:
        counts = [p.count() for p in self.parts]
        return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)


def expand_inputs(inputs: Sequence[str | Path]) -> Iterator[str]:
    """Every input with its brace lists expanded; at most ``MAX_NAMES`` names in all."""
    n = 0
    for raw in inputs:
        for name in [str(raw)] if Path(raw).exists() else expand(str(raw)):  # a name with literal braces
            n += 1
            if n > MAX_NAMES:
                raise InvalidInputError(f"The inputs expand to more than {MAX_NAMES:,} names; split the run.")
            yield name


def open_sources(
    inputs: Sequence[str | Path],
    input_format: str = "auto",
    *,
    path_column: str | None = None,
    metadata_columns: Sequence[str] | None = None,
    roots: Sequence[Path | str] | None = None,
    bulk: BulkOptions | None = None,
    max_file_bytes: int | None = None,
) -> Sources:
    """Sources for ``inputs``; fails fast (InvalidInputError) on a missing input or bad format.
    Object URLs, dataset layouts, brace lists and ``pipe:`` go through indexer/sources/bulk.py.
    ``max_file_bytes``: a tar member larger than this is a per-item failure, never read."""
    if input_format not in FORMATS:
        raise InvalidInputError(f"Unknown input format {input_format!r}; use one of {', '.join(FORMATS)}.")
    bulk = replace(bulk or BulkOptions(), input_format=input_format, path_column=path_column)
    bulk = replace(bulk, metadata_columns=metadata_columns)
    if max_file_bytes is not None and bulk.max_member_bytes is None:  # tar members: read at most this
        bulk = replace(bulk, max_member_bytes=max_file_bytes)
    parts: list[Source] = []
    files: list[Path] = []  # consecutive plain files/folders become one FilesSource
    for raw in expand_inputs(inputs):
        extra = open_bulk(raw, bulk)
        if extra is not None:
            if files:
                parts.append(FilesSource(files))
                files = []
            parts.extend(extra)
            continue
        paths = expand_glob(str(raw)) if is_glob(str(raw)) and not Path(raw).exists() else [Path(raw).expanduser()]
        for path in paths:
            kind = _kind(path, input_format)
            if kind == "files":
                files.append(path)
                continue
            if files:
                parts.append(FilesSource(files))
                files = []
            if not path.is_file():
                raise InvalidInputError(f"Input {str(path)!r} does not exist or is not a file.")
            if kind == "list":
                parts.append(FileListSource(path))
            elif kind == "manifest":
                parts.append(ManifestSource(path, path_column=path_column, metadata_columns=metadata_columns))
            else:
                parts.append(WebDatasetSource(path, max_file_bytes))
    if files:
        parts.append(FilesSource(files))
    return Sources(parts, roots)
