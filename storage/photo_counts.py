"""How many live records of a collection have each capture/place field (``collections``,
``index-stats``, ``GET /v1/collections``): what the photo filters can find."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from storage.reading import live_mask, on_newer_manifest, shard_meta
from storage.schema import PHOTO_FIELDS

if TYPE_CHECKING:
    from storage.collection import Collection

COUNTED = tuple(f for f in PHOTO_FIELDS if f != "taken_at_local")


def photo_field_counts(coll: Collection) -> dict[str, int] | None:
    """field -> records with a value (``gps_lat`` counts positions); None for text collections."""
    if coll.manifest.kind != "images":
        return None
    return on_newer_manifest(coll, lambda: _counts(coll))


def _counts(coll: Collection) -> dict[str, int]:
    counts = dict.fromkeys(COUNTED, 0)
    for shard in coll.manifest.shards:
        meta = shard_meta(coll, shard)
        live = live_mask(shard, meta.column("id").to_numpy())
        for name in COUNTED:
            if name in meta.column_names:
                counts[name] += int(np.count_nonzero(live & ~np.asarray(meta.column(name).is_null(), dtype=bool)))
    return counts
