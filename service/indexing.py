"""Indexing runs from settings: the model, the executor (local or Ray), the runner."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blipsearch.config import Settings
from blipsearch.errors import InvalidInputError
from indexer.pipeline import IndexReport
from indexer.runner import Executor, IndexRequest, IndexRunner, create_image_collection, model_for_collection
from media.objects import ObjectOptions
from models.base import Embedder
from models.captioner import Captioner, Decoding
from search.index_store import IndexPolicy
from service.models import load_model, model_loader
from storage.catalog import open_catalog
from storage.collection import Collection

RUNNERS = ("local", "ray")


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
    runner: str = "local",
    *,
    captioner: Captioner | None = None,
    decoding: Decoding | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
) -> Executor:
    if runner == "local":
        from indexer.executors.local import LocalExecutor, LocalOptions

        return LocalExecutor(
            LocalOptions(
                batch_size=settings.batch_size,
                shard_size=settings.shard_size,
                workers=settings.decode_workers,
                max_pixels=settings.max_image_pixels,
                max_bytes=settings.max_file_bytes,
                jpeg_draft=settings.decode_draft(),
                decode_mode=settings.decode_mode,
                captioner=captioner,
                decoding=decoding or Decoding(),
            )
        )
    if runner == "ray":
        if captioner is not None:
            raise InvalidInputError("--captions and --cache-itm-features run with --runner local only.")
        from indexer.executors.ray_data import RayExecutor, RayOptions

        options = RayOptions(
            address=address,
            num_cpus=num_cpus,
            batch_size=settings.batch_size,
            shard_size=settings.shard_size,
            decode_workers=settings.decode_workers,
            max_pixels=settings.max_image_pixels,
            max_bytes=settings.max_file_bytes,
            jpeg_draft=settings.decode_draft(),
        )
        return RayExecutor(options, model_loader(settings))
    raise InvalidInputError(f"Unknown runner {runner!r}; use one of {', '.join(RUNNERS)}.")


def index_paths(
    settings: Settings,
    paths: Sequence[str | Path],
    collection: str,
    *,
    model: str | None = None,
    embedder: Embedder | None = None,
    progress: bool = True,
    cache_itm_features: bool = False,
    captioner: Captioner | None = None,
    decoding: Decoding | None = None,
    job_id: str | None = None,
    input_format: str = "auto",
    path_column: str | None = None,
    metadata_columns: Sequence[str] | None = None,
    index_spec: str | None = None,
    on_disk: bool | None = None,
    roots: Sequence[Path | str] | None = None,
    image_column: str | None = None,
    allow_pipe: bool = False,
    runner: str = "local",
    address: str | None = None,
    num_cpus: int | None = None,
) -> IndexReport:
    """Index ``paths`` into ``collection`` as a catalog job (see indexer/runner.py)."""
    if runner == "ray" and cache_itm_features:
        raise InvalidInputError("--captions and --cache-itm-features run with --runner local only.")
    executor = executor_for(
        settings, runner, captioner=captioner, decoding=decoding, address=address, num_cpus=num_cpus
    )
    if embedder is None:
        embedder = load_model(settings, collection_model(settings, collection, model))
    request = IndexRequest(
        paths,
        collection,
        input_format=input_format,
        path_column=path_column,
        metadata_columns=metadata_columns,
        index_spec=index_spec,
        on_disk=on_disk,
        roots=roots,
        cache_itm_features=cache_itm_features,
        image_column=image_column,
        allow_pipe=allow_pipe,
        objects=ObjectOptions.from_settings(settings),
    )
    run = IndexRunner(
        settings.data_dir,
        open_catalog(settings.catalog_url()),
        executor,
        policy=IndexPolicy.from_settings(settings),
        progress=progress,
    )
    return run.run(request, embedder, job_id=job_id)


def index_with_ray(settings: Settings, paths: Sequence[str | Path], collection: str, **kwargs: Any) -> IndexReport:
    """``index_paths`` on Ray (``address``: a cluster; none starts a local Ray)."""
    return index_paths(settings, paths, collection, runner="ray", **kwargs)


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
