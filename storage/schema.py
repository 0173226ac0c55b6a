"""The Arrow record schema of an image collection.

One row per image. ``id`` is stable for the record's life and is the FAISS id (see
``storage/collection.py`` for the row-alignment contract). ``embedding`` is a fixed-size list
of ``dim`` float32 (BLIP) or a fixed-size list of ``vectors_per_item`` such lists (BLIP-2).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

RECORD_FIELDS = ("id", "uri", "sha256", "width", "height", "format", "bytes", "caption", "model_id", "added_at")


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
            pa.field("model_id", pa.string(), nullable=False),
            pa.field("embedding", embedding_type(dim, vectors_per_item), nullable=False),
            pa.field("added_at", pa.timestamp("us", tz="UTC"), nullable=False),
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
