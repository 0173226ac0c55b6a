"""Search filters, applied inside the FAISS search through an ID selector (not by post-filtering),
so a selective filter still returns ``k`` results when ``k`` records match.

Supported: ``uri_prefix``; ``added_after`` / ``added_before``; width and height bounds; and
``fields``: equality (a scalar) or membership (a list) on any stored column (``format``,
``caption_model``, ``external_id``, …) or a key of the record's JSON metadata (text
collections, and images indexed from manifests or tar shards);
and ``exclude_decisions``: moderation decisions to hide (``block`` is hidden by default).

Bad values are refused with the field named, never passed on to Arrow: dates without a zone
are UTC and must lie in ``DATE_RANGE``; bounds are JSON integers (not ``true``, not ``"10"``)
within int32; ``fields`` values must fit the column's type (text is cast: ``--where
width=10``), checked per collection when the filter is applied.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, ValidationError, field_validator

from blipsearch.errors import InvalidInputError
from storage.collection import Collection
from storage.reading import live_mask, on_newer_manifest, shard_meta

Scalar = str | int | float | bool
INT32_MAX = 2**31 - 1
DATE_RANGE = (datetime(1970, 1, 1, tzinfo=timezone.utc), datetime(3000, 1, 1, tzinfo=timezone.utc))


class Filters(BaseModel):
    model_config = {"extra": "forbid"}

    uri_prefix: str | None = Field(default=None, max_length=4096, strict=True)
    added_after: datetime | None = Field(default=None, description="ISO date/time; without a zone: UTC.")
    added_before: datetime | None = Field(default=None, description="ISO date/time; without a zone: UTC.")
    min_width: int | None = Field(default=None, ge=0, le=INT32_MAX, strict=True)
    max_width: int | None = Field(default=None, ge=0, le=INT32_MAX, strict=True)
    min_height: int | None = Field(default=None, ge=0, le=INT32_MAX, strict=True)
    max_height: int | None = Field(default=None, ge=0, le=INT32_MAX, strict=True)
    fields: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)
    exclude_decisions: list[Literal["flag", "review", "block"]] = Field(
        default_factory=list, description="Hide records whose moderation decision is one of these (block always is)."
    )

    @field_validator("added_after", "added_before", mode="before")
    @classmethod
    def _no_bool_dates(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be an ISO date/time, not a boolean")
        return v

    @field_validator("added_after", "added_before")
    @classmethod
    def _utc_in_range(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        if v.tzinfo is None:
            v = v.replace(tzinfo=timezone.utc)
        try:
            v = v.astimezone(timezone.utc)
        except OverflowError:
            raise ValueError("is out of range") from None
        lo, hi = DATE_RANGE
        if not lo <= v < hi:
            raise ValueError(f"must be from {lo:%Y-%m-%d} to before {hi:%Y-%m-%d} (UTC)")
        return v

    @classmethod
    def parse(cls, data: Any) -> Filters:
        """``Filters`` from a dict (the CLI) or a JSON string (form fields), with a one-line
        InvalidInputError naming the first bad field."""
        try:
            return cls.model_validate_json(data) if isinstance(data, str | bytes) else cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInputError(f"Invalid filter: {describe(exc)}") from None

    def is_empty(self) -> bool:
        """True when no column filter is set (``exclude_decisions`` is applied separately)."""
        return not any(v for v in self.model_dump(exclude={"exclude_decisions"}).values())


def describe(exc: ValidationError) -> str:
    """The first error of ``exc`` in one line: ``field.path: message``."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "filters"
    return f"{where}: {first.get('msg', 'invalid')} (got {str(first.get('input'))[:60]!r})"


def _bad(key: str, value: Any, why: str) -> InvalidInputError:
    return InvalidInputError(f"Invalid filter fields.{key}: {str(value)[:60]!r} {why}.")


def _coerce(key: str, typ: pa.DataType, values: list[Any]) -> pa.Array:
    """``values`` as an array of the column's type, checked value by value (Arrow alone would
    turn ``true`` into 1, or fail with an overflow)."""
    out: list[Any] = []
    for v in values:
        if pa.types.is_integer(typ):
            if isinstance(v, str):
                try:
                    v = int(v.strip())
                except ValueError:
                    raise _bad(key, v, f"is not an integer ({typ} column)") from None
            if isinstance(v, bool) or not isinstance(v, int):
                raise _bad(key, v, f"is not an integer ({typ} column)")
            bits = typ.bit_width
            lo, hi = (
                (0, 2**bits - 1) if pa.types.is_unsigned_integer(typ) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            )
            if not lo <= v <= hi:
                raise _bad(key, v, f"is out of range for a {typ} column")
        elif pa.types.is_floating(typ):
            if isinstance(v, str):
                try:
                    v = float(v.strip())
                except ValueError:
                    raise _bad(key, v, "is not a number") from None
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
                raise _bad(key, v, "is not a finite number")
            v = float(v)
        elif pa.types.is_boolean(typ):
            if isinstance(v, str) and v.lower() in ("true", "false"):
                v = v.lower() == "true"
            if not isinstance(v, bool):
                raise _bad(key, v, "is not true or false")
        elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
            if not isinstance(v, str):
                raise _bad(key, v, "is not a string")
        else:
            raise InvalidInputError(f"Invalid filter fields.{key}: the {typ} column cannot be filtered by value.")
        out.append(v)
    return pa.array(out, type=typ)


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
            hit = pc.is_in(col, value_set=_coerce(key, col.type, values))
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
    """Record ids matching ``f`` (sorted int64), read again on a newer manifest when a merge
    removed a shard meanwhile (storage/reading.py)."""
    return on_newer_manifest(coll, lambda: _allowed_ids(coll, f))


def _allowed_ids(coll: Collection, f: Filters) -> np.ndarray:
    out = []
    for shard in coll.manifest.shards:
        meta = shard_meta(coll, shard)
        ids = meta.column("id").to_numpy()
        out.append(ids[np.asarray(_mask(meta, f), dtype=bool) & live_mask(shard, ids)])
    return np.concatenate(out) if out else np.zeros(0, np.int64)
