"""Collections from settings: open, list, describe, maintain (reindex, delete, compact, stats)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from blipsearch.config import Settings
from search import index_store
from storage.catalog import open_catalog
from storage.collection import Collection
from storage.manifest import IndexInfo


def open_collection(settings: Settings, name: str) -> Collection:
    return Collection.open(settings.data_dir, name)


def policy(settings: Settings) -> index_store.IndexPolicy:
    return index_store.IndexPolicy.from_settings(settings)


def photo_field_counts(coll: Collection) -> dict[str, int] | None:
    from storage.photo_counts import photo_field_counts as count

    return count(coll)


def list_collections(settings: Settings) -> list[dict[str, Any]]:
    """Every collection the catalog knows that exists on disk, as ``Manifest.summary``."""
    rows = []
    for row in open_catalog(settings.catalog_url()).list_collections():
        if Collection.exists(settings.data_dir, row.name):
            coll = Collection.open(settings.data_dir, row.name)
            rows.append({**coll.manifest.summary(), "photo_fields": photo_field_counts(coll)})
    return rows


def reindex(settings: Settings, name: str, spec: str | None = None, on_disk: bool | None = None) -> IndexInfo:
    coll = open_collection(settings, name)
    return index_store.refresh(coll, rebuild=True, spec=spec, policy=policy(settings), on_disk=on_disk)


def delete_records(settings: Settings, name: str, ids: Sequence[int]) -> dict[str, Any]:
    """Tombstone ``ids`` (one manifest commit) and drop their vectors from the index."""
    coll = open_collection(settings, name)
    deleted, unknown = coll.delete(ids)
    index_store.refresh(coll, policy=policy(settings))
    return {"collection": name, "deleted": deleted, "not_found": unknown, "count": coll.reload().count}


def compact(settings: Settings, name: str) -> dict[str, Any]:
    from storage.compaction import compact as run

    coll = open_collection(settings, name)
    index_store.refresh(coll, policy=policy(settings))  # the index drops tombstoned vectors before their rows go
    return asdict(run(coll, small_rows=settings.small_shard_rows, target_rows=settings.shard_size))


def index_stats(settings: Settings, name: str, *, eval_recall: bool = False, queries: int = 200) -> dict[str, Any]:
    from search.index_choice import memory_bytes
    from search.recall import eval_recall as measure

    coll = open_collection(settings, name)
    info = index_store.refresh(coll, policy=policy(settings))
    index, _ = index_store.load(coll)
    m = coll.manifest
    n = m.count * m.vectors_per_item
    payload: dict[str, Any] = {
        "collection": name,
        "records": m.count,
        "vectors": n,
        "dim": m.dim,
        "model_id": m.model_id,
        "precision": m.precision,
        "embed_dtype": m.embed_dtype,
        "embed_runtime": m.embed_runtime,
        "spec": info.spec,
        "auto": info.auto,
        "explicit_spec": m.index_spec,
        "recommended_spec": index_store.wanted_spec(coll, policy(settings))[0],
        "search_defaults": info.search_defaults,
        "refine_k": info.search_defaults.get("refine_k", 0) if index.compressed else 0,
        "memory_bytes": memory_bytes(info.spec, n, m.dim),
        "on_disk": info.on_disk,
        "photo_fields": photo_field_counts(coll),
        "disk_bytes": (coll.root / info.data_file).stat().st_size if info.data_file else None,
        "on_gpu": index.on_gpu,
        "index": json.loads(info.model_dump_json()),
    }
    if eval_recall:
        payload["recall"] = measure(coll, index, queries=queries, k=10)
    return payload
