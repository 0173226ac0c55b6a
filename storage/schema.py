"""The Arrow record schemas: image collections and text collections.

One row per image (or text). ``id`` is stable for the record's life and is the FAISS id (see
``storage/collection.py`` for the row-alignment contract). ``embedding`` is a fixed-size list
of ``dim`` float32 (BLIP) or a fixed-size list of ``vectors_per_item`` such lists (BLIP-2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from blipsearch.errors import ModelMismatchError

if TYPE_CHECKING:
    from storage.manifest import Manifest

RECORD_FIELDS = (
    "id",
    "uri",
    "sha256",
    "width",
    "height",
    "format",
    "bytes",
    "caption",
    "caption_model",
    "model_id",
    "added_at",
    "metadata",
    "pdq_hash",
    "pdq_quality",
    "ocr_text",
    "ocr_lines",
    "ocr_engine",
    "ocr_error",
    "taken_at",
    "taken_at_local",
    "camera_make",
    "camera_model",
    "lens",
    "gps_lat",
    "gps_lon",
    "gps_alt",
    "country_code",
    "country",
    "region",
    "city",
    "capture_notes",
)
# Text read from the image (OCR; models/ocr/): the searchable text in reading order (lines under the
# confidence threshold left out), every line as JSON ([{"text", "box": 4 [x, y] points, "confidence"}]),
# the engine with its version, and why OCR stopped short (a bound hit) or failed. All null until OCR ran.
OCR_FIELDS = ("ocr_text", "ocr_lines", "ocr_engine", "ocr_error")
# Capture metadata from the image's EXIF/XMP (media/exif.py) and the place of its GPS position
# (media/places.py), filled at indexing (or by `backfill-metadata`); null where the file says nothing.
# ``taken_at``: UTC, or, where ``taken_at_local`` is true, the camera's wall clock of unknown zone
# stored as if it were UTC. ``capture_notes``: JSON list of what was dropped as unreadable or absurd
# (``[]``: nothing); null only where the metadata was never read (`backfill-metadata` reads it).
CAPTURE_TEXT = ("camera_make", "camera_model", "lens")
GPS_FIELDS = ("gps_lat", "gps_lon", "gps_alt")
PLACE_FIELDS = ("country_code", "country", "region", "city")
PHOTO_FIELDS = ("taken_at", "taken_at_local", *CAPTURE_TEXT, *GPS_FIELDS, *PLACE_FIELDS)


def embedding_type(dim: int, vectors_per_item: int) -> pa.DataType:
    inner = pa.list_(pa.float32(), dim)
    return inner if vectors_per_item == 1 else pa.list_(inner, vectors_per_item)


def image_schema(dim: int, vectors_per_item: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("uri", pa.string(), nullable=False),
            pa.field("sha256", pa.string(), nullable=False),
            pa.field("width", pa.int32(), nullable=False),
            pa.field("height", pa.int32(), nullable=False),
            pa.field("format", pa.string()),
            pa.field("bytes", pa.int64(), nullable=False),
            pa.field("caption", pa.string(), nullable=True),
            pa.field("caption_model", pa.string(), nullable=True),
            pa.field("model_id", pa.string(), nullable=False),
            pa.field("embedding", embedding_type(dim, vectors_per_item), nullable=False),
            pa.field("added_at", pa.timestamp("us", tz="UTC"), nullable=False),
            # JSON object of the source's metadata (manifest columns, a tar sample's .json/.txt)
            pa.field("metadata", pa.string(), nullable=True),
            # PDQ perceptual hash of the decoded image (64 hex digits) and its quality (0-100);
            # null where pdqhash was not installed at indexing (`moderate backfill-pdq` fills it)
            pa.field("pdq_hash", pa.string(), nullable=True),
            pa.field("pdq_quality", pa.int32(), nullable=True),
            *(pa.field(name, pa.string(), nullable=True) for name in OCR_FIELDS),
            pa.field("taken_at", pa.timestamp("us", tz="UTC"), nullable=True),
            pa.field("taken_at_local", pa.bool_(), nullable=True),
            *(pa.field(name, pa.string(), nullable=True) for name in CAPTURE_TEXT),
            *(pa.field(name, pa.float64(), nullable=True) for name in GPS_FIELDS),
            *(pa.field(name, pa.string(), nullable=True) for name in PLACE_FIELDS),
            pa.field("capture_notes", pa.string(), nullable=True),
        ]
    )


def embeddings_to_arrow(emb: np.ndarray, dim: int, vectors_per_item: int) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(emb, dtype=np.float32).reshape(-1))
    arr = pa.FixedSizeListArray.from_arrays(flat, dim)
    if vectors_per_item > 1:
        arr = pa.FixedSizeListArray.from_arrays(arr, vectors_per_item)
    return arr


def embeddings_from_arrow(col: pa.ChunkedArray | pa.Array, dim: int, vectors_per_item: int) -> np.ndarray:
    """[n, dim] or [n, vectors_per_item, dim] float32, without a per-row Python loop."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], type=col.type)
    values = col.flatten()
    if vectors_per_item > 1:
        values = values.flatten()
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    shape = (-1, dim) if vectors_per_item == 1 else (-1, vectors_per_item, dim)
    return flat.reshape(shape)


def text_schema(dim: int) -> pa.Schema:
    """Text collections (what image→text searches): one row per text."""
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("external_id", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("metadata", pa.string(), nullable=True),  # JSON object of the extra input columns
            pa.field("sha256", pa.string(), nullable=False),
            pa.field("model_id", pa.string(), nullable=False),
            pa.field("embedding", embedding_type(dim, 1), nullable=False),
            pa.field("added_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )


def record_schema(m: Manifest) -> pa.Schema:
    return text_schema(m.dim) if m.kind == "texts" else image_schema(m.dim, m.vectors_per_item)


def build_record_table(
    m: Manifest, rows: Mapping[str, Sequence[Any]], keep: list[int], ids: np.ndarray, emb: np.ndarray, now: datetime
) -> pa.Table:
    """The Arrow table of one shard: the caller's columns for rows ``keep`` plus ids, model, embeddings."""
    vpi = m.vectors_per_item
    expected = (m.dim,) if vpi == 1 else (vpi, m.dim)
    if tuple(emb.shape[1:]) != expected:
        raise ModelMismatchError(f"Embeddings of shape {emb.shape[1:]} do not fit collection {m.collection!r}")
    schema = record_schema(m)
    n = len(keep)
    generated = {
        "id": pa.array(ids, pa.int64()),
        "model_id": pa.array([m.model_id] * n, pa.string()),
        "embedding": embeddings_to_arrow(emb, m.dim, vpi),
        "added_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
    }
    arrays = []
    for f in schema:
        if f.name in generated:
            arrays.append(generated[f.name])
        else:
            values = rows.get(f.name)
            picked = [values[i] for i in keep] if values is not None else [None] * n
            arrays.append(pa.array(picked, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)
