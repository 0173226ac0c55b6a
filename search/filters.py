"""Search filters, applied inside the FAISS search through an ID selector (not by post-filtering),
so a selective filter still returns ``k`` results when ``k`` records match.

Supported: ``uri_prefix``; ``added_after`` / ``added_before``; width and height bounds; and
``fields``: equality (a scalar) or membership (a list) on any stored column (``format``,
``caption_model``, ``external_id``, …) or a key of the record's JSON metadata (text
collections, and images indexed from manifests or tar shards);
and ``exclude_decisions``: moderation decisions to hide (``block`` is hidden by default).

Photos (capture metadata, media/exif.py and media/places.py): ``taken_after`` / ``taken_before``
on ``taken_at`` (a local ``taken_at`` compares as its wall clock read as UTC); ``near``
(``"lat,lon,radius_km"``: great-circle distance of the GPS position); ``place`` (equal to the
country, its code, the region or the city, ignoring case and accents); ``camera`` (a substring
of "make model", ignoring case). Records without the field never match.

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
from media.places import EARTH_RADIUS_KM, fold
from storage.collection import Collection
from storage.reading import live_mask, on_newer_manifest, shard_meta

Scalar = str | int | float | bool
INT32_MAX = 2**31 - 1
PHOTO_FILTERS = ("taken_after", "taken_before", "near", "place", "camera")
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
    taken_after: datetime | None = Field(default=None, description="Taken at or after (ISO; without a zone: UTC).")
    taken_before: datetime | None = Field(default=None, description="Taken before (ISO; without a zone: UTC).")
    near: tuple[float, float, float] | None = Field(
        default=None, description='GPS within a radius: "lat,lon,radius_km" (or [lat, lon, radius_km]).'
    )
    place: str | None = Field(
        default=None, min_length=1, max_length=200, description="Country (or code), region or city; any case/accents."
    )
    camera: str | None = Field(
        default=None, min_length=1, max_length=200, description="Substring of the camera's make or model."
    )
    exclude_decisions: list[Literal["flag", "review", "block"]] = Field(
        default_factory=list, description="Hide records whose moderation decision is one of these (block always is)."
    )

    @field_validator("place", "camera")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be blank")
        return v

    @field_validator("near", mode="before")
    @classmethod
    def _near_text(cls, v: Any) -> Any:
        if isinstance(v, str):
            parts = [p.strip() for p in v.split(",")]
            if len(parts) != 3:
                raise ValueError('must be "lat,lon,radius_km"')
            try:
                return tuple(float(p) for p in parts)
            except ValueError:
                raise ValueError('must be three numbers: "lat,lon,radius_km"') from None
        if isinstance(v, list | tuple) and any(isinstance(x, bool) for x in v):
            raise ValueError("must be numbers, not booleans")
        return v

    @field_validator("near")
    @classmethod
    def _near_range(cls, v: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if v is None:
            return v
        lat, lon, radius = v
        if not all(math.isfinite(x) for x in v):
            raise ValueError("must be finite numbers")
        if not -90 <= lat <= 90 or not -180 <= lon <= 180:
            raise ValueError("lat must be within -90..90 and lon within -180..180")
        if not 0 < radius <= 20_100:
            raise ValueError("radius_km must be over 0 and at most 20100 (half the Earth's circumference)")
        return v

    @field_validator("added_after", "added_before", "taken_after", "taken_before", mode="before")
    @classmethod
    def _no_bool_dates(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be an ISO date/time, not a boolean")
        return v

    @field_validator("added_after", "added_before", "taken_after", "taken_before")
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
    if any(getattr(f, k) is not None for k in PHOTO_FILTERS):
        mask = pc.and_(mask, photo_mask(table, f))
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


def photo_mask(table: pa.Table, f: Filters) -> pa.Array:
    """Rows matching the photo filters (``taken_*``, ``near``, ``place``, ``camera``); a shard
    written before these columns existed has them all null, so matches none of them."""
    n = table.num_rows
    keep = np.ones(n, dtype=bool)
    names = set(table.column_names)

    def col(name: str) -> list[Any]:
        return table.column(name).to_pylist() if name in names else [None] * n

    if f.taken_after is not None or f.taken_before is not None:
        if "taken_at" not in names:
            return pa.array(np.zeros(n, dtype=bool))
        taken = table.column("taken_at")
        for bound, op in ((f.taken_after, pc.greater_equal), (f.taken_before, pc.less)):
            if bound is not None:
                keep &= np.asarray(pc.fill_null(op(taken, pa.scalar(bound)), False), dtype=bool)
    if f.near is not None:
        lat, lon, radius = f.near
        lats = np.array([np.nan if v is None else v for v in col("gps_lat")], dtype=np.float64)
        lons = np.array([np.nan if v is None else v for v in col("gps_lon")], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            keep &= haversine_km(lat, lon, lats, lons) <= radius  # NaN (no position) compares False
    if f.place is not None:
        want = fold(f.place.strip())
        cols = [col(c) for c in ("country_code", "country", "region", "city")]
        rows = zip(*cols, strict=True)
        keep &= np.array([any(v is not None and fold(v) == want for v in row) for row in rows], dtype=bool)
    if f.camera is not None:
        want = fold(f.camera.strip())
        pairs = zip(col("camera_make"), col("camera_model"), strict=True)
        keep &= np.array([want in fold(f"{mk or ''} {md or ''}") for mk, md in pairs], dtype=bool)
    return pa.array(keep)


def haversine_km(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """Great-circle distances (km) from (lat, lon) to each of (lats, lons) (media/places.py's, vectorised)."""
    p1, p2 = np.radians(lat), np.radians(lats)
    dp, dl = p2 - p1, np.radians(lons - lon)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(a)))


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
