"""``blipsearch sync`` and ``watch``: a collection kept equal to its folders."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.common import CollectionOpt, DataDirOpt, JsonOpt, ModelOpt, emit, handle_errors, settings_for

FoldersArg = Annotated[list[str], typer.Argument(help="Folders to keep the collection equal to (recursive).")]


def human_sync(p: dict[str, Any]) -> str:
    lines = [
        f"{p['collection']}: {p['files']} files ({p['unchanged']} unchanged, {p['hashed']} hashed): "
        f"added {p['added']}, updated {p['updated']}, moved {p['moved']}, deleted {p['deleted']}, "
        f"copies {p['copies']}, deferred {p['deferred']}, failed {p['failed']} in {p['seconds']}s"
        + (f" (collection now {p['collection_size']} records)" if "collection_size" in p else "")
    ]
    lines += [f"  {f.get('reason')}: {f.get('path')}: {f.get('error')}" for f in p.get("failures", [])]
    return "\n".join(lines)


@handle_errors
def sync(
    paths: FoldersArg,
    collection: CollectionOpt,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make the collection equal to its folders: new and changed files indexed, deleted files
    removed, moved or renamed files given their new path (same record, no re-embed)."""
    from service.syncing import sync_paths

    emit(sync_paths(settings_for(data_dir), paths, collection, model=model), as_json, human_sync)


@handle_errors
def watch(
    paths: FoldersArg,
    collection: CollectionOpt,
    model: ModelOpt = None,
    debounce: Annotated[
        float, typer.Option("--debounce", min=0.05, help="Seconds without new changes before a sync runs.")
    ] = 1.0,
    settle: Annotated[
        float, typer.Option("--settle", min=0.0, help="A file modified less than this many seconds ago waits.")
    ] = 2.0,
    rescan: Annotated[
        float, typer.Option("--rescan", min=1.0, help="Seconds between full syncs without events (missed events).")
    ] = 300.0,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Keep the collection equal to its folders as they change (a sync first, then one per batch
    of changes). Stop with Ctrl-C; a restart catches up with what changed meanwhile."""
    from indexer.watch import FolderWatcher, WatchOptions
    from service.syncing import Syncer

    syncer = Syncer(settings_for(data_dir), paths, collection, model=model)
    watcher = FolderWatcher(
        syncer.folders,
        syncer.once,
        WatchOptions(debounce_s=debounce, settle_s=settle, rescan_s=rescan),
        ignore=[syncer.settings.data_dir],
        on_report=lambda r: emit(r.as_dict(), as_json, human_sync),
    )
    try:
        watcher.run()
    except KeyboardInterrupt:
        typer.echo("stopped; the collection is as of the last sync", err=True)
