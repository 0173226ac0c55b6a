"""Assemble a ready SearchEngine for a collection (model, index, optional ITM re-ranker)."""

from __future__ import annotations

from blipsearch.config import Settings
from models.base import Embedder
from search.engine import SearchEngine
from storage.collection import Collection


def load_model(settings: Settings, source: str) -> Embedder:
    from models import load_embedder

    return load_embedder(
        source,
        device=settings.device,
        dtype=settings.dtype,
        batch_size=settings.batch_size,
        precision=settings.precision,
    )


def open_engine(
    settings: Settings,
    collection: str,
    *,
    model: str | None = None,
    embedder: Embedder | None = None,
    rerank: bool = False,
) -> SearchEngine:
    """The collection's engine; the model defaults to the one the collection was built with."""
    coll = Collection.open(settings.data_dir, collection)
    if embedder is None:
        embedder = load_model(settings, model or coll.manifest.model_id)
    reranker = None
    if rerank:
        from models import load_itm
        from rerank.image_tokens import ImageTokenSource
        from rerank.itm import ItmReranker

        scorer = load_itm(embedder, first_token=settings.itm_first_token, batch_size=settings.itm_batch_size)
        tokens = None
        if coll.manifest.kind == "images":
            tokens = ImageTokenSource(
                coll,
                embedder,
                scorer,
                max_pixels=settings.max_image_pixels,
                max_bytes=settings.max_file_bytes,
                cache_items=settings.itm_cache_items,
            )
        reranker = ItmReranker(scorer, tokens)
    from moderation.store import DecisionCache
    from storage.catalog import open_catalog
    from storage.fulltext import KeywordIndex

    catalog = open_catalog(settings.catalog_url())
    engine = SearchEngine.open(coll, embedder, reranker, KeywordIndex(catalog.engine))
    engine.decisions = DecisionCache(catalog, coll.name).ids
    return engine
