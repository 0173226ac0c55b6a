"""``import-embeddings``: vectors computed elsewhere into a collection (indexer/importing.py)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from blipsearch.config import Settings
from indexer.importing import ImportOptions, find_parts, import_embeddings
from indexer.runner import create_image_collection
from models.base import Embedder
from search import index_store
from search.index_store import IndexPolicy
from service.models import load_model
from storage.catalog import open_catalog, utcnow


def import_precomputed(
    settings: Settings,
    collection: str,
    embeddings: Path,
    metadata: Path | None,
    model: str,
    options: ImportOptions,
    *,
    embedder: Embedder | None = None,
) -> dict[str, Any]:
    """Check and import; the collection's index is refreshed. A catalog job records the run."""
    parts = find_parts(embeddings, metadata, options.vector_column)  # fails fast, before the model loads
    embedder = embedder or load_model(settings, model)
    catalog = open_catalog(settings.catalog_url())
    coll = create_image_collection(settings.data_dir, catalog, collection, embedder)
    job_id = catalog.create_job(
        "import", coll.name, embedder.model_id, {"embeddings": str(embeddings), "metadata": str(metadata or "")}
    )
    try:
        report = import_embeddings(coll, embedder, parts, options)
        index_store.refresh(coll, policy=IndexPolicy.from_settings(settings))
    except Exception as exc:
        catalog.update_job(job_id, state="failed", error=str(exc)[:2000], finished_at=utcnow())
        raise
    out = asdict(report)
    catalog.update_job(job_id, state="succeeded", finished_at=utcnow(), counts=out)
    return {**out, "job_id": job_id, "collection_size": coll.manifest.count}
