"""A CSV or Parquet manifest: one row per image, a path column plus optional metadata columns.

The path column is ``path``, ``uri``, ``file``, ``filename`` or ``image_path`` (first found),
or the one named by ``path_column``. Every other column (or those in ``metadata_columns``) is
kept in the record's ``metadata``. Relative paths are relative to the manifest's folder.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from blipsearch.errors import InvalidInputError
from indexer.sources.base import Source, SourceItem
from media.objects import is_object_url, is_remote


def object_entry(raw: str, meta: dict[str, Any] | None = None) -> SourceItem:
    """A list or manifest entry that is a URL: an object is read by the pipeline; an http(s)
    URL is never fetched as an image (only lists and manifests are read over http)."""
    if is_object_url(raw):
        return SourceItem(raw, meta=meta or {})
    return SourceItem(raw, meta=meta or {}, error="http(s) URLs are read for lists and manifests, not as images")


PATH_COLUMNS = ("path", "uri", "file", "filename", "image_path")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


class ManifestSource(Source):
    def __init__(
        self,
        path: Path,
        *,
        path_column: str | None = None,
        metadata_columns: Sequence[str] | None = None,
        table: Any = None,  # already read (a remote manifest: indexer/sources/remote_lists.py)
    ) -> None:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        try:
            if table is not None:
                pass
            elif path.suffix.lower() == ".parquet":
                table = pq.read_table(path)
            else:  # every CSV column is read as text: "007" stays "007"
                names = pcsv.open_csv(path).schema.names
                opts = pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True)
                table = pcsv.read_csv(path, convert_options=opts)
        except (OSError, pa.ArrowInvalid) as exc:
            raise InvalidInputError(f"Cannot read the manifest {str(path)!r}: {exc}") from exc
        names = table.schema.names
        column = path_column or next((c for c in PATH_COLUMNS if c in names), None)
        if column is None or column not in names:
            raise InvalidInputError(
                f"The manifest {str(path)!r} has no path column (looked for {path_column or ', '.join(PATH_COLUMNS)}; "
                f"it has {', '.join(names)}). Name it with --path-column."
            )
        extra = [c for c in names if c != column] if metadata_columns is None else list(metadata_columns)
        unknown = [c for c in extra if c not in names]
        if unknown:
            raise InvalidInputError(f"The manifest {str(path)!r} has no column(s) {', '.join(unknown)}.")
        self.base = path.resolve().parent
        self.paths = table.column(column).to_pylist()
        self.meta = {c: table.column(c).to_pylist() for c in extra}
        self.origin = path

    def __iter__(self) -> Iterator[SourceItem]:
        for row, raw in enumerate(self.paths):
            meta = {c: _jsonable(v[row]) for c, v in self.meta.items()}
            if not raw:
                yield SourceItem(f"{self.origin}#row{row}", meta=meta)  # no path: reported as a failure
                continue
            if "\0" in str(raw):  # no file has such a name: a per-row failure, not a crash
                yield SourceItem(f"{self.origin}#row{row}", meta=meta, error="the path holds a NUL byte")
                continue
            yield self.entry(str(raw), meta)

    def entry(self, raw: str, meta: dict[str, Any]) -> SourceItem:
        """The item one row names: an object URL as it is, a path relative to the manifest."""
        if is_remote(raw):
            return object_entry(raw, meta)
        p = Path(raw).expanduser()
        full = (p if p.is_absolute() else self.base / p).resolve()
        return SourceItem(str(full), path=full, meta=meta)

    def count(self) -> int:
        return len(self.paths)
