"""Images stored as bytes inside dataset files: ``dataset://<file>#<column>/<row>``.

``<file>`` is an absolute local path or an object URL of a Parquet file or an Arrow file (the
``datasets`` library's ``save_to_disk`` writes Arrow IPC streams); ``<row>`` is the row's index
in that file; ``<column>`` the image column: a Hugging Face ``Image`` struct (``{bytes, path}``)
or a binary column. Reading one back touches one row group (Parquet) or streams batches up to
the row (Arrow), never the whole file in memory; a local file is opened without following
symbolic links (media/safe_read.py) and the bytes are checked against the record's sha256.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from blipsearch.errors import ImageDecodeError, SourceChangedError, SourceUnavailableError
from media.objects import ObjectOptions, is_object_url, open_object

PREFIX = "dataset://"


def dataset_uri(location: str, column: str, row: int) -> str:
    return f"{PREFIX}{location}#{column}/{row}"


def split_dataset_uri(uri: str) -> tuple[str, str, int] | None:
    """(file, column, row) of a ``dataset://`` uri, else None."""
    if not uri.startswith(PREFIX):
        return None
    location, sep, frag = uri[len(PREFIX) :].rpartition("#")
    column, slash, row = frag.rpartition("/")
    if not (sep and slash and location and column and row.isdigit()):
        return None
    return location, column, int(row)


def cell_bytes(value: Any) -> bytes | None:
    """The image bytes of one cell: a binary value, or an ``Image`` struct's ``bytes``."""
    if isinstance(value, dict):
        value = value.get("bytes")
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else None


OpenLocal = Callable[[Path], int]  # a read-only descriptor of a local file (safe_read.open_regular)


def _open(location: str, open_local: OpenLocal | None) -> IO[bytes]:
    if is_object_url(location):
        return open_object(location, ObjectOptions.from_env(), block_size=1 << 20)
    if open_local is None:
        return open(location, "rb")
    return os.fdopen(open_local(Path(location)), "rb")


def read_row(location: str, column: str, row: int, max_bytes: int, open_local: OpenLocal | None = None) -> bytes:
    """The image bytes in ``row`` of ``column``. Raises SourceUnavailableError or ImageDecodeError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with _open(location, open_local) as fh:
            if location.lower().endswith(".parquet"):
                pf = pq.ParquetFile(fh)
                start = 0
                for g in range(pf.num_row_groups):
                    n = pf.metadata.row_group(g).num_rows
                    if row < start + n:
                        value = pf.read_row_group(g, columns=[column]).column(0)[row - start].as_py()
                        break
                    start += n
                else:
                    raise SourceUnavailableError("The stored original's row is no longer in its dataset file.")
            else:
                value = _arrow_row(pa, fh, column, row)
    except (SourceUnavailableError, ImageDecodeError):
        raise
    except Exception as exc:  # noqa: BLE001 - unreadable dataset file, gone or rewritten
        raise SourceUnavailableError(
            f"The stored original's dataset file cannot be read ({type(exc).__name__})."
        ) from None
    data = cell_bytes(value)
    if data is None:
        raise SourceUnavailableError("The stored original's dataset row holds no image bytes.")
    if len(data) > max_bytes:
        raise ImageDecodeError(f"{len(data)} bytes, over the {max_bytes}-byte limit", "too_large_file")
    return data


def _arrow_row(pa: Any, fh: IO[bytes], column: str, row: int) -> Any:
    try:
        reader = pa.ipc.open_stream(fh)
    except pa.ArrowInvalid:
        fh.seek(0)
        file_reader = pa.ipc.open_file(fh)
        batches = (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
    else:
        batches = iter(reader)
    start = 0
    for batch in batches:
        if row < start + batch.num_rows:
            return batch.column(batch.schema.get_field_index(column))[row - start].as_py()
        start += batch.num_rows
    raise SourceUnavailableError("The stored original's row is no longer in its dataset file.")


def read_dataset_verified(uri: str, sha256: str | None, max_bytes: int, open_local: OpenLocal | None = None) -> bytes:
    parts = split_dataset_uri(uri)
    if parts is None:
        raise SourceUnavailableError("The stored original has an unusable dataset uri.")
    if not sha256:
        raise SourceUnavailableError("The stored original has no recorded sha256 to check it against.")
    data = read_row(*parts, max_bytes, open_local)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise SourceChangedError("The stored original has changed since indexing; re-index it to serve it again.")
    return data
