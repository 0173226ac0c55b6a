"""File lists and manifests read from a URL (``s3://…/list.txt``, ``https://…/manifest.csv``).

They are read whole but bounded (``MAX_META_BYTES``). An entry is an object URL, or a key
relative to the list's own folder (``shards/a.jpg`` next to ``s3://bucket/lists/x.txt`` is
``s3://bucket/lists/shards/a.jpg``); an entry with a ``.``/``..`` segment or a local path is a
per-item failure. http(s) entries are never fetched as images.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from blipsearch.errors import InvalidInputError
from indexer.sources.base import Source, SourceItem
from indexer.sources.manifest import ManifestSource, object_entry
from indexer.sources.tree import Tree, unsafe_key
from media.objects import is_remote, scrub


def _resolve(tree: Tree, folder: str, raw: str, meta: dict[str, Any]) -> SourceItem:
    if is_remote(raw):
        return object_entry(raw, meta)
    if raw.startswith("/") or raw.startswith("~"):
        return SourceItem(raw, meta=meta, error="a remote list names objects, not local paths")
    why = unsafe_key(raw)
    if why or tree.scheme in ("http", "https"):
        return SourceItem(raw, meta=meta, error=f"unusable entry: {why or 'relative to an http(s) list'}")
    return object_entry(tree.uri(posixpath.join(folder, raw)), meta)


class RemoteListSource(Source):
    def __init__(self, tree: Tree, path: str) -> None:
        self.tree = tree
        self.folder = posixpath.dirname(path)
        text = tree.read_bytes(path).decode("utf-8", "replace")
        self.entries = [e.strip() for e in text.splitlines() if e.strip() and not e.strip().startswith("#")]

    def __iter__(self) -> Iterator[SourceItem]:
        for raw in self.entries:
            yield _resolve(self.tree, self.folder, raw, {})

    def count(self) -> int:
        return len(self.entries)


class RemoteManifestSource(ManifestSource):
    def __init__(
        self,
        tree: Tree,
        path: str,
        *,
        path_column: str | None = None,
        metadata_columns: Sequence[str] | None = None,
    ) -> None:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        data = tree.read_bytes(path)
        try:
            if path.lower().endswith(".parquet"):
                table = pq.read_table(io.BytesIO(data))
            else:
                names = pcsv.open_csv(io.BytesIO(data)).schema.names
                opts = pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True)
                table = pcsv.read_csv(io.BytesIO(data), convert_options=opts)
        except (OSError, pa.ArrowInvalid) as exc:
            raise InvalidInputError(f"Cannot read the manifest {scrub(tree.uri(path))!r}: {exc}") from None
        super().__init__(
            Path(posixpath.basename(path)), path_column=path_column, metadata_columns=metadata_columns, table=table
        )
        self.tree = tree
        self.folder = posixpath.dirname(path)
        self.origin = tree.uri(path)  # type: ignore[assignment]

    def entry(self, raw: str, meta: dict[str, Any]) -> SourceItem:
        return _resolve(self.tree, self.folder, raw, meta)
