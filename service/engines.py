"""Search engines from settings: collection, model, index, keyword index, ITM re-ranker,
moderation decisions and the query encoder, all passed to ``SearchEngine``'s constructor."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from blipsearch.config import Settings
from models.base import Embedder
from search.engine import SearchEngine
from service.models import full_embedder, load_itm_scorer, load_model, load_query_model
from storage.collection import Collection

if TYPE_CHECKING:
    from models.itm import ItmScorer
    from rerank.base import Reranker
    from rerank.itm import ItmReranker
    from search.engine import IndexLoader


def make_reranker(settings: Settings, coll: Collection, embedder: Embedder, scorer: ItmScorer) -> ItmReranker:
    """An ITM re-ranker over ``coll``'s shortlist with ``scorer``'s head; image tokens from the
    feature cache (the collection's own model only) or recomputed by the scorer's vision encoder."""
    from rerank.image_tokens import ImageTokenSource
    from rerank.itm import ItmReranker

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
    return ItmReranker(scorer, tokens)


def open_engine(
    settings: Settings,
    collection: str,
    *,
    model: str | None = None,
    embedder: Embedder | None = None,
    rerank: bool = False,
    encode_text: Callable[[str], np.ndarray] | None = None,
    rerank_model: str | None = None,
    itm_scorer: ItmScorer | None = None,
    index_loader: IndexLoader | None = None,
    lazy_rerank: bool = False,
) -> SearchEngine:
    """The collection's engine; the model defaults to the one the collection was built with.

    ``rerank``: load an ITM re-ranker, the collection model's own head unless ``rerank_model``
    (or an already loaded ``itm_scorer``) names a BLIP / BLIP-2 ITM checkpoint.
    ``lazy_rerank`` (with ``rerank``, the model's own head): the re-ranker, and the full model
    behind it, load on the first query that re-ranks (``rerank.lazy.LazyReranker``), so a
    query embedder (``load_query_model``) serves text searches without the torch checkpoint.
    ``index_loader``: the collection's index comes from it instead of the saved FAISS index
    (a sharded server's fan-out index, api/ray_serve.py).
    """
    from moderation.store import DecisionCache
    from storage.catalog import open_catalog
    from storage.fulltext import KeywordIndex

    coll = Collection.open(settings.data_dir, collection)
    lazy = lazy_rerank and rerank and itm_scorer is None and rerank_model is None
    if embedder is None:  # a query-only embedder unless the ITM head is needed now
        eager = (rerank and not lazy) or itm_scorer is not None
        load = load_model if eager else load_query_model
        embedder = load(settings, model or coll.manifest.model_id)
    reranker: Reranker | None = None
    if lazy:
        from rerank.lazy import LazyReranker

        query_embedder = embedder

        def load_own() -> Reranker:
            full = full_embedder(query_embedder)
            return make_reranker(settings, coll, full, load_itm_scorer(settings, full))

        reranker = LazyReranker(embedder.model_id, f"{embedder.family}-itm", load_own)
    elif rerank or itm_scorer is not None:
        scorer = itm_scorer or load_itm_scorer(settings, embedder, rerank_model)
        reranker = make_reranker(settings, coll, embedder, scorer)
    catalog = open_catalog(settings.catalog_url())
    return SearchEngine.open(
        coll,
        embedder,
        reranker,
        KeywordIndex(catalog.engine),
        decisions=DecisionCache(catalog, coll.name).ids,
        encode_text=encode_text,
        index_loader=index_loader,
    )
