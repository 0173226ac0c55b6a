"""Captioning a collection from settings: a ``caption`` job in the catalog (indexer/captions.py)."""

from __future__ import annotations

from typing import Any

from blipsearch.config import Settings
from media.stored import ImageLimits
from models.captioners import Captioner, Decoding
from storage.catalog import open_catalog
from storage.collection import Collection


def caption_collection(
    settings: Settings,
    name: str,
    captioner: Captioner,
    decoding: Decoding,
    *,
    job_id: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """(Re)caption collection ``name`` as a job (``job_id``: an existing one to resume)."""
    from indexer.captions import caption_collection as run

    return run(
        Collection.open(settings.data_dir, name),
        captioner,
        decoding,
        limits=ImageLimits.from_settings(settings),
        progress=progress,
        catalog=open_catalog(settings.catalog_url()),
        job_id=job_id,
    )
