"""The keys a collection's records use in their JSON metadata (what ``filters.fields`` can
match besides stored columns), cached per shard file so a large collection is read once."""

from __future__ import annotations

import json
import os
import threading

import pyarrow.parquet as pq

from storage.collection import Collection

MAX_KEYS = 200
_cache: dict[tuple[str, int, int], frozenset[str]] = {}  # (shard path, mtime_ns, size) -> keys
_lock = threading.Lock()


def _shard_keys(path: str) -> frozenset[str]:
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    with _lock:
        if key in _cache:
            return _cache[key]
    keys: set[str] = set()
    if "metadata" in pq.read_schema(path).names:
        for raw in pq.read_table(path, columns=["metadata"]).column("metadata").to_pylist():
            if not raw:
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                keys.update(str(k) for k in obj)
            if len(keys) >= MAX_KEYS:
                break
    out = frozenset(keys)
    with _lock:
        _cache[key] = out
    return out


def metadata_keys(coll: Collection) -> list[str]:
    """Sorted metadata keys over every shard (at most ``MAX_KEYS``)."""
    keys: set[str] = set()
    for shard in coll.manifest.shards:
        keys |= _shard_keys(str(coll.shard_path(shard)))
        if len(keys) >= MAX_KEYS:
            break
    return sorted(keys)[:MAX_KEYS]
