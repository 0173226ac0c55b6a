"""``blipsearch reembed``: move a collection to another model without downtime."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from blipsearch.errors import InvalidInputError
from cli.common import CollectionOpt, DataDirOpt, JsonOpt, ModelOpt, emit, handle_errors, settings_for


def _human(p: dict[str, Any]) -> str:
    if "new_version" not in p:
        return f"{p['collection']}: dropped old versions {', '.join(p['dropped_versions']) or '(none)'}"
    if p.get("finished_after_swap"):
        return (
            f"{p['collection']}: already on {p['model_id']} (version {p['new_version']}); finished what an "
            "interrupted re-embed left after its swap"
        )
    lines = [
        f"{p['collection']}: now {p['model_id']} (version {p['new_version']}, was {p['old_version']}); "
        f"{p['reembedded']} records re-embedded, index {p['index']['spec']}",
    ]
    lines += [f"  left out: id {d['id']} {d['uri']}: {d['error']}" for d in p["dropped_records"]]
    if p["dropped_versions"]:
        lines.append(f"  dropped old versions: {', '.join(p['dropped_versions'])}")
    else:
        lines.append(f"  the old version is kept; remove it with: blipsearch reembed -c {p['collection']} --drop-old")
    return "\n".join(lines)


@handle_errors
def reembed(
    collection: CollectionOpt,
    model: ModelOpt = None,
    drop_old: Annotated[
        bool,
        typer.Option("--drop-old", help="Delete the replaced version(s) after the swap (or now, without --model)."),
    ] = False,
    skip_missing: Annotated[
        bool,
        typer.Option(
            "--skip-missing", help="Leave out records whose image is gone or changed (listed) instead of stopping."
        ),
    ] = False,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-embed a collection with another model: a new version is built alongside the live one
    (which keeps answering), then swapped in atomically. Captions, metadata and ids are kept."""
    from indexer.reembed import drop_old_versions
    from service.collections import open_collection
    from service.indexing import reembed as run

    settings = settings_for(data_dir, batch_size=batch_size)
    if model is None:
        if not drop_old:
            raise InvalidInputError("Give --model NEW to re-embed, or --drop-old to delete replaced versions.")
        open_collection(settings, collection)  # a clear error for an unknown collection
        emit({"collection": collection, "dropped_versions": drop_old_versions(settings, collection)}, as_json, _human)
        return
    payload = run(settings, collection, model, drop_old=drop_old, skip_missing=skip_missing)
    emit(payload, as_json, _human)
