"""``blipsearch delete`` and ``compact``: tombstones and shard rewrites."""

from __future__ import annotations

from typing import Annotated

import typer

from blipsearch.cli_common import CollectionOpt, DataDirOpt, JsonOpt, emit, handle_errors, settings_for


@handle_errors
def delete(
    ids: Annotated[list[int], typer.Argument(help="Record ids to delete.")],
    collection: CollectionOpt,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete records: tombstoned at once (never returned again), removed from the index."""
    from search import index_store
    from storage.collection import Collection

    settings = settings_for(data_dir)
    coll = Collection.open(settings.data_dir, collection)
    deleted, unknown = coll.delete(ids)
    index_store.refresh(coll)
    payload = {"collection": collection, "deleted": deleted, "not_found": unknown, "count": coll.reload().count}
    emit(
        payload,
        as_json,
        lambda p: f"{collection}: deleted {len(deleted)}" + (f", not found: {unknown}" if unknown else ""),
    )
    if unknown and not deleted:
        raise typer.Exit(4)


@handle_errors
def compact(collection: CollectionOpt, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Rewrite shards without deleted records and merge small shards (ids and search results are unchanged)."""
    from dataclasses import asdict

    from search import index_store
    from storage.collection import Collection
    from storage.compaction import compact as run

    settings = settings_for(data_dir)
    coll = Collection.open(settings.data_dir, collection)
    index_store.refresh(coll)  # the index drops tombstoned vectors before their rows go
    report = run(coll, small_rows=settings.small_shard_rows, target_rows=settings.shard_size)
    emit(
        asdict(report),
        as_json,
        lambda p: (
            f"{collection}: removed {p['rows_removed']} deleted rows "
            f"({p['shards_rewritten']} shards rewritten, {p['shards_removed']} removed, "
            f"{p['shards_merged']} small shards merged into {p['shards_written_by_merge']})"
        ),
    )
