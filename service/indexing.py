"""Indexing runs from settings: the model, the executor (local or Ray), the runner."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blipsearch.config import Settings
from blipsearch.errors import InvalidInputError
from indexer.commit import IndexReport
from indexer.ocr import OcrOptions
from indexer.options import IndexOptions
from indexer.runner import Executor, IndexRequest, IndexRunner, create_image_collection, model_for_collection
from media.objects import ObjectOptions
from models.base import Embedder
from models.captioners import Captioner, Decoding
from search.index_store import IndexPolicy
from service.models import load_model, model_loader
from storage.catalog import open_catalog
from storage.collection import Collection


def collection_model(settings: Settings, name: str, model: str | None = None) -> str:
    """The explicit model, else the existing collection's, else ``BLIPSEARCH_MODEL``."""
    return model_for_collection(settings.data_dir, name, model, settings.model)


def new_image_collection(
    settings: Settings, name: str, embedder: Embedder, cache_itm_features: bool = False
) -> Collection:
    return create_image_collection(
        settings.data_dir, open_catalog(settings.catalog_url()), name, embedder, cache_itm_features
    )


def executor_for(
    settings: Settings,
    options: IndexOptions,
    captioner: Captioner | None = None,
    decoding: Decoding | None = None,
    ocr: OcrOptions | None = None,
) -> Executor:
    """The executor ``options.runner`` names (checked by ``IndexOptions.check``): this machine,
    or Ray (model actors load the model as ``settings`` say)."""
    if options.runner == "ray":
        from indexer.executors.ray_data import RayExecutor

        if ocr is not None:
            raise InvalidInputError(
                "OCR (--ocr, or a collection with OCR on) runs with --runner local only; index with --runner "
                "local, or backfill afterwards with: blipsearch ocr --collection NAME"
            )
        return RayExecutor(options, model_loader(settings))
    from indexer.executors.local import LocalExecutor

    return LocalExecutor(options, captioner, decoding, ocr)


def index_paths(
    settings: Settings,
    paths: Sequence[str | Path],
    collection: str,
    *,
    options: IndexOptions | None = None,
    model: str | None = None,
    embedder: Embedder | None = None,
    captioner: Captioner | None = None,
    decoding: Decoding | None = None,
    job_id: str | None = None,
    progress: bool = True,
    ocr: bool = False,
    ocr_engine: str | None = None,
    **request: Any,
) -> IndexReport:
    """Index ``paths`` into ``collection`` as a catalog job (see indexer/runner.py).

    ``options``: how it runs (default: from ``settings``); ``request``: the other fields of
    ``IndexRequest`` (input format, manifest columns, index spec, on-disk, roots, ITM features).
    ``ocr``: read the text in each new image (and turn OCR on for the collection); a collection
    with OCR on gets it without asking.
    """
    req = IndexRequest(paths, collection, objects=ObjectOptions.from_settings(settings), **request)
    options = options or IndexOptions.from_settings(settings)
    options.check(captions=captioner is not None, cache_itm_features=req.cache_itm_features)
    executor = executor_for(settings, options, captioner, decoding, ocr_options(settings, collection, ocr, ocr_engine))
    if embedder is None:
        embedder = load_model(settings, collection_model(settings, collection, model))
    run = IndexRunner(
        settings.data_dir,
        open_catalog(settings.catalog_url()),
        executor,
        policy=IndexPolicy.from_settings(settings),
        progress=progress,
    )
    return run.run(req, embedder, job_id=job_id)


def ocr_options(settings: Settings, collection: str, ocr: bool, engine: str | None = None) -> OcrOptions | None:
    """OCR for an index run: asked for (``--ocr``), or on for the existing collection, else None."""
    if ocr:
        return OcrOptions.from_settings(settings, engine)
    if engine:
        raise InvalidInputError("--ocr-engine needs --ocr.")
    if Collection.exists(settings.data_dir, collection):
        entry = Collection.open(settings.data_dir, collection).manifest.ocr
        if entry:
            return OcrOptions.for_collection(settings, entry)
    return None


def index_texts(
    settings: Settings, path: Path, collection: str, *, model: str | None = None, progress: bool = True
) -> dict[str, Any]:
    from indexer.texts import index_texts as run

    embedder = load_model(settings, collection_model(settings, collection, model))
    out = run(
        settings.data_dir, path, collection, embedder, progress=progress, policy=IndexPolicy.from_settings(settings)
    )
    open_catalog(settings.catalog_url()).upsert_collection(collection, "texts", embedder.describe())
    return out


def reembed(
    settings: Settings, name: str, model: str, *, embedder: Embedder | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Re-embed collection ``name`` with ``model`` (indexer/reembed.py)."""
    from indexer.reembed import reembed as run

    return run(settings, name, model, embedder=embedder or load_model(settings, model), **kwargs)
