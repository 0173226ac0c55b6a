"""``blipsearch delete`` and ``compact``: tombstones and shard rewrites."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import CollectionOpt, DataDirOpt, JsonOpt, emit, handle_errors, settings_for


@handle_errors
def delete(
    ids: Annotated[list[int], typer.Argument(help="Record ids to delete.")],
    collection: CollectionOpt,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete records: tombstoned at once (never returned again), removed from the index."""
    from service.collections import delete_records

    payload = delete_records(settings_for(data_dir), collection, ids)
    deleted, unknown = payload["deleted"], payload["not_found"]
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
    from service.collections import compact as run

    emit(
        run(settings_for(data_dir), collection),
        as_json,
        lambda p: (
            f"{collection}: removed {p['rows_removed']} deleted rows "
            f"({p['shards_rewritten']} shards rewritten, {p['shards_removed']} removed, "
            f"{p['shards_merged']} small shards merged into {p['shards_written_by_merge']})"
        ),
    )
