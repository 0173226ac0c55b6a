"""Search filters, applied inside the FAISS search through an ID selector (not by post-filtering),
so a selective filter still returns ``k`` results when ``k`` records match.

Supported: ``uri_prefix``; ``added_after`` / ``added_before``; width and height bounds; and
``fields``: equality (a scalar) or membership (a list) on any stored column (``format``,
``caption_model``, ``external_id``, …) or a key of the record's JSON metadata (text
collections, and images indexed from manifests or tar shards);
and ``exclude_decisions``: moderation decisions to hide (``block`` is hidden by default).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from blipsearch.errors import InvalidInputError
from storage.collection import Collection, live_mask, shard_meta

Scalar = str | int | float | bool


class Filters(BaseModel):
    model_config = {"extra": "forbid"}

    uri_prefix: str | None = Field(default=None, max_length=4096)
    added_after: datetime | None = None
    added_before: datetime | None = None
    min_width: int | None = Field(default=None, ge=0)
    max_width: int | None = Field(default=None, ge=0)
    min_height: int | None = Field(default=None, ge=0)
    max_height: int | None = Field(default=None, ge=0)
    fields: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)
    exclude_decisions: list[Literal["flag", "review", "block"]] = Field(
        default_factory=list, description="Hide records whose moderation decision is one of these (block always is)."
    )

    def is_empty(self) -> bool:
        """True when no column filter is set (``exclude_decisions`` is applied separately)."""
        return not any(v for v in self.model_dump(exclude={"exclude_decisions"}).values())


def _mask(table: pa.Table, f: Filters) -> pa.ChunkedArray | pa.Array:
    n = table.num_rows
    mask: Any = pa.array(np.ones(n, dtype=bool))
    names = set(table.column_names)

    def need(col: str) -> pa.ChunkedArray:
        if col not in names:
            raise InvalidInputError(f"This collection has no {col!r} column to filter on.")
        return table.column(col)

    if f.uri_prefix:
        mask = pc.and_(mask, pc.fill_null(pc.starts_with(need("uri"), f.uri_prefix), False))
    for col, bound, op in (
        ("added_at", f.added_after, pc.greater_equal),
        ("added_at", f.added_before, pc.less),
        ("width", f.min_width, pc.greater_equal),
        ("width", f.max_width, pc.less_equal),
        ("height", f.min_height, pc.greater_equal),
        ("height", f.max_height, pc.less_equal),
    ):
        if bound is not None:
            mask = pc.and_(mask, pc.fill_null(op(need(col), pa.scalar(bound)), False))
    for key, want in f.fields.items():
        values = want if isinstance(want, list) else [want]
        if key in ("embedding",):
            raise InvalidInputError("Cannot filter on embeddings.")
        if key in names:
            col = table.column(key)
            hit = pc.is_in(col, value_set=pa.array(values, type=col.type))
        elif "metadata" in names:
            meta = [json.loads(m) if m else {} for m in table.column("metadata").to_pylist()]
            hit = pa.array([m.get(key) in values for m in meta])
        elif "uri" in names:  # an image shard written before records had metadata
            hit = pa.array([False] * table.num_rows)
        else:
            raise InvalidInputError(f"Unknown filter field {key!r}.")
        mask = pc.and_(mask, pc.fill_null(hit, False))
    return mask


def allowed_ids(coll: Collection, f: Filters) -> np.ndarray:
    """Record ids matching ``f`` (sorted int64)."""
    out = []
    for shard in coll.manifest.shards:
        meta = shard_meta(coll, shard)
        ids = meta.column("id").to_numpy()
        out.append(ids[np.asarray(_mask(meta, f), dtype=bool) & live_mask(shard, ids)])
    return np.concatenate(out) if out else np.zeros(0, np.int64)
