"""Assemble a ready SearchEngine for a collection (model, index, optional ITM re-ranker)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blipsearch.config import Settings
from models.base import Embedder
from search.engine import SearchEngine
from storage.collection import Collection

if TYPE_CHECKING:
    from models.itm import ItmScorer
    from rerank.itm import ItmReranker


def load_model(settings: Settings, source: str) -> Embedder:
    from models import load_embedder

    return load_embedder(source, device=settings.device, dtype=settings.dtype, batch_size=settings.batch_size)


def load_itm_scorer(settings: Settings, embedder: Embedder, rerank_model: str | None = None) -> ItmScorer:
    """The ITM scorer: ``rerank_model``'s (a BLIP / BLIP-2 ITM checkpoint, any collection), else the
    embedder's own head (NoItmModelError for CLIP, SigLIP, ALIGN)."""
    from models import load_itm, load_itm_model
    from models.loading import resolve_source

    kw = {"first_token": settings.itm_first_token, "batch_size": settings.itm_batch_size}
    if rerank_model is None or (embedder.has_itm and resolve_source(rerank_model) == embedder.model_id):
        return load_itm(embedder, **kw)  # type: ignore[arg-type]
    return load_itm_model(rerank_model, device=settings.device, dtype=settings.dtype, **kw)  # type: ignore[arg-type]


def make_reranker(settings: Settings, coll: Collection, embedder: Embedder, scorer: ItmScorer) -> ItmReranker:
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
    rerank_model: str | None = None,
    itm_scorer: ItmScorer | None = None,
) -> SearchEngine:
    """The collection's engine; the model defaults to the one the collection was built with.

    ``rerank``: load an ITM re-ranker, the collection model's own head unless ``rerank_model``
    (or an already loaded ``itm_scorer``) names a BLIP / BLIP-2 ITM checkpoint.
    """
    coll = Collection.open(settings.data_dir, collection)
    if embedder is None:
        embedder = load_model(settings, model or coll.manifest.model_id)
    reranker = None
    if rerank or itm_scorer is not None:
        scorer = itm_scorer or load_itm_scorer(settings, embedder, rerank_model)
        reranker = make_reranker(settings, coll, embedder, scorer)
    from moderation.store import DecisionCache
    from storage.catalog import open_catalog
    from storage.fulltext import KeywordIndex

    catalog = open_catalog(settings.catalog_url())
    engine = SearchEngine.open(coll, embedder, reranker, KeywordIndex(catalog.engine))
    engine.decisions = DecisionCache(catalog, coll.name).ids
    return engine
