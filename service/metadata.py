"""Capture metadata for an existing collection from settings: a ``metadata`` job in the catalog
(indexer/metadata_backfill.py)."""

from __future__ import annotations

from typing import Any

from blipsearch.config import Settings
from media.stored import ImageLimits
from storage.catalog import open_catalog
from storage.collection import Collection


def backfill_metadata(
    settings: Settings, name: str, *, job_id: str | None = None, progress: bool = True
) -> dict[str, Any]:
    from indexer.metadata_backfill import backfill_metadata as run

    return run(
        Collection.open(settings.data_dir, name),
        limits=ImageLimits.from_settings(settings),
        progress=progress,
        catalog=open_catalog(settings.catalog_url()),
        job_id=job_id,
    )
