"""Dataset files whose images are bytes in a column: Parquet (what the Hugging Face Hub
converts every image dataset to) and Arrow (the ``datasets`` library's ``save_to_disk``).

The image column is recognised by its type: a Hugging Face ``Image`` feature (a struct with a
binary ``bytes`` field and a ``path``), else a binary column; ``--image-column`` names one.
Every other column goes into the record's metadata. Files are read a batch of rows at a time
(never whole); each row's bytes go through the same size limit, hashing and guarded decoding
as a file, so re-runs skip what is committed and a bomb or a non-image is a per-item failure.

A row's uri is ``dataset://<file>#<column>/<row>`` (media/dataset_rows.py reads it back).

``save_to_disk`` folders are recognised by ``state.json`` (a Dataset: its ``_data_files``) or
``dataset_dict.json`` (a DatasetDict: one folder per split; ``split`` goes into metadata).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from blipsearch.errors import InvalidInputError
from indexer.sources.base import Source, SourceItem
from indexer.sources.manifest import _jsonable
from indexer.sources.tree import Tree
from media.dataset_rows import cell_bytes, dataset_uri
from media.objects import scrub

BATCH_ROWS = 256
DATASET_SUFFIXES = (".parquet", ".arrow")


def image_column(schema: Any, wanted: str | None = None) -> str | None:
    """The image column of an Arrow schema: ``wanted``, else the first Image struct, else the
    first binary column."""
    import pyarrow as pa

    def is_image(t: Any) -> bool:
        if pa.types.is_struct(t):
            names = {t.field(i).name: t.field(i).type for i in range(t.num_fields)}
            b = names.get("bytes")
            return b is not None and (pa.types.is_binary(b) or pa.types.is_large_binary(b))
        return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t))

    if wanted is not None:
        if wanted not in schema.names:
            raise InvalidInputError(f"No image column {wanted!r}; the columns are {', '.join(schema.names)}.")
        return wanted
    structs = [f.name for f in schema if pa.types.is_struct(f.type) and is_image(f.type)]
    binaries = [f.name for f in schema if not pa.types.is_struct(f.type) and is_image(f.type)]
    return (structs or binaries or [None])[0]


def _schema(tree: Tree, path: str) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tree.open_stream(path) as fh:
        if path.lower().endswith(".parquet"):
            return pq.ParquetFile(fh).schema_arrow
        try:
            return pa.ipc.open_stream(fh).schema
        except pa.ArrowInvalid:
            fh.seek(0)
            return pa.ipc.open_file(fh).schema


def has_image_column(tree: Tree, path: str, wanted: str | None = None) -> bool:
    try:
        return image_column(_schema(tree, path), wanted) is not None
    except InvalidInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - not a readable Parquet/Arrow file
        raise InvalidInputError(f"Cannot read the dataset file {scrub(tree.uri(path))!r}: {exc}") from None


class DatasetFileSource(Source):
    """One Parquet or Arrow file with an image column."""

    def __init__(
        self, tree: Tree, path: str, *, image_column: str | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        self.tree = tree
        self.path = path
        self.wanted = image_column
        self.extra = extra or {}
        self._count: int | None = None

    def _batches(self, fh: Any) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.path.lower().endswith(".parquet"):
            yield from pq.ParquetFile(fh).iter_batches(batch_size=BATCH_ROWS)
            return
        try:
            yield from pa.ipc.open_stream(fh)
        except pa.ArrowInvalid:
            fh.seek(0)
            reader = pa.ipc.open_file(fh)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)

    def __iter__(self) -> Iterator[SourceItem]:
        location = self.tree.uri(self.path)
        row = 0
        try:
            with self.tree.open_stream(self.path) as fh:
                column: str | None = None
                for batch in self._batches(fh):
                    if column is None:
                        column = image_column(batch.schema, self.wanted)
                        if column is None:
                            raise InvalidInputError(f"{scrub(location)!r} has no image column.")
                    others = [n for n in batch.schema.names if n != column]
                    images = batch.column(column).to_pylist()
                    meta_cols = {n: batch.column(n).to_pylist() for n in others}
                    for i, cell in enumerate(images):
                        meta = {**self.extra, **{n: _jsonable(v[i]) for n, v in meta_cols.items()}}
                        if isinstance(cell, dict) and cell.get("path"):
                            meta.setdefault("image_path", cell["path"])
                        uri = dataset_uri(location, column, row)
                        data = cell_bytes(cell)
                        if data is None:
                            yield SourceItem(uri, meta=meta, error="the row holds no image bytes")
                        else:
                            yield SourceItem(uri, data=data, meta=meta)
                        row += 1
        except InvalidInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file: one recorded failure
            yield SourceItem(f"{location}#row{row}", error=f"unreadable dataset file after row {row}: {exc}")

    def count(self) -> int | None:
        if self._count is None and self.path.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            try:
                with self.tree.open_stream(self.path) as fh:
                    self._count = pq.ParquetFile(fh).metadata.num_rows
            except Exception:  # noqa: BLE001 - unknown count only
                return None
        return self._count


def is_saved_dataset(tree: Tree, names: set[str]) -> bool:
    return tree.join("dataset_dict.json") in names or {tree.join("state.json"), tree.join("dataset_info.json")} <= names


def saved_dataset_sources(tree: Tree, image_column: str | None = None) -> list[Source]:
    """The Arrow files of a ``save_to_disk`` folder (a Dataset or a DatasetDict), in order."""

    def load(path: str) -> Any:
        try:
            return json.loads(tree.read_bytes(path, 16 << 20))
        except ValueError as exc:
            raise InvalidInputError(f"Unreadable {scrub(tree.uri(path))!r}: {exc}") from None

    def one(folder: str, extra: dict[str, Any]) -> list[Source]:
        state = load(posixpath_join(folder, "state.json"))
        files = [str(f.get("filename")) for f in state.get("_data_files") or [] if isinstance(f, dict)]
        if not files or not all("/" not in f and f.endswith(".arrow") for f in files):
            raise InvalidInputError(f"{scrub(tree.uri(folder))!r}: state.json lists no usable Arrow data files.")
        return [
            DatasetFileSource(tree, posixpath_join(folder, f), image_column=image_column, extra=extra) for f in files
        ]

    if tree.join("dataset_dict.json") in set(tree.files()):
        splits = load(tree.join("dataset_dict.json")).get("splits") or []
        if not all(isinstance(s, str) and s and "/" not in s and s not in (".", "..") for s in splits):
            raise InvalidInputError(f"{scrub(tree.uri(tree.root))!r}: dataset_dict.json has unusable split names.")
        return [src for s in splits for src in one(tree.join(s), {"split": s})]
    return one(tree.root, {})


def posixpath_join(a: str, b: str) -> str:
    return f"{a.rstrip('/')}/{b}"
