"""Search engines from settings: collection, model, index, keyword index, ITM re-ranker,
moderation decisions and the query encoder, all passed to ``SearchEngine``'s constructor."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from blipsearch.config import Settings
from models.base import Embedder
from search.engine import SearchEngine
from service.models import load_model, load_scorer
from storage.collection import Collection


def open_engine(
    settings: Settings,
    collection: str,
    *,
    model: str | None = None,
    embedder: Embedder | None = None,
    rerank: bool = False,
    encode_text: Callable[[str], np.ndarray] | None = None,
) -> SearchEngine:
    """The collection's engine; the model defaults to the one the collection was built with."""
    from moderation.store import DecisionCache
    from storage.catalog import open_catalog
    from storage.fulltext import KeywordIndex

    coll = Collection.open(settings.data_dir, collection)
    if embedder is None:
        embedder = load_model(settings, model or coll.manifest.model_id)
    reranker = None
    if rerank:
        from rerank.image_tokens import ImageTokenSource
        from rerank.itm import ItmReranker

        scorer = load_scorer(settings, embedder)
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
    catalog = open_catalog(settings.catalog_url())
    return SearchEngine.open(
        coll,
        embedder,
        reranker,
        KeywordIndex(catalog.engine),
        decisions=DecisionCache(catalog, coll.name).ids,
        encode_text=encode_text,
    )
