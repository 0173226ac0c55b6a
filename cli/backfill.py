"""``blipsearch backfill-metadata``: capture metadata and places for records indexed before
they were read (a resumable, idempotent job; no re-embedding)."""

from __future__ import annotations

from typing import Any

from cli.common import CollectionOpt, DataDirOpt, JsonOpt, emit, handle_errors, settings_for


def _human(p: dict[str, Any]) -> str:
    return (
        f"{p['collection']}: updated {p['updated']} records ({p['with_date']} with a date, {p['with_gps']} with GPS, "
        f"{p['with_place']} with a place), failed {p['failed']}"
    )


@handle_errors
def backfill_metadata(collection: CollectionOpt, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Read EXIF/XMP capture metadata (taken_at, camera, lens, GPS) and places for the records of
    a collection that lack them, without re-embedding. Re-run to resume; a run with nothing to do
    writes nothing."""
    from service.metadata import backfill_metadata as run

    emit(run(settings_for(data_dir), collection), as_json, _human)
