"""Collection writes (API key with scope write; admin to delete a collection): create,
delete, upload images (indexed at once), delete an image."""

from __future__ import annotations

import functools
from typing import Annotated

from fastapi import APIRouter, File, UploadFile
from starlette.concurrency import run_in_threadpool

from api.auth import ADMIN, WRITE
from api.decoding import check_request_pixels
from api.deps import PathsDep, SettingsDep, StateDep
from api.routes.collections import collection_info
from api.schemas import (
    ERRORS,
    CollectionInfo,
    CreateCollectionRequest,
    DeleteResponse,
    UploadAdded,
    UploadResponse,
    UploadSkipped,
)
from api.uploads import read_limited, sniff, sniff_and_decode
from blipsearch.errors import ConflictError, ForbiddenError, InvalidInputError, RecordNotFoundError
from storage.collection import Collection
from storage.layout import validate_name

router = APIRouter(prefix="/v1/collections", tags=["collections"], responses=ERRORS)


@router.post("", response_model=CollectionInfo, status_code=201, dependencies=[WRITE])
def create_collection(body: CreateCollectionRequest, state: StateDep, paths: PathsDep) -> CollectionInfo:
    settings = state.settings
    validate_name(body.name, new=True)  # cheap checks first: no model loads for a name that cannot be
    model = body.model or settings.model
    if model not in {settings.model, *settings.allowed_models}:
        raise ForbiddenError(
            f"Model {model!r} is not allowed here: use {settings.model!r} or add it to BLIPSEARCH_ALLOWED_MODELS."
        )
    if Collection.exists(settings.data_dir, body.name):
        raise ConflictError(f"Collection {body.name!r} already exists.")
    from service.indexing import new_image_collection  # the indexing stack loads torch: not at import

    coll = new_image_collection(settings, body.name, state.embedder(model), body.cache_itm_features)
    return collection_info(coll, paths)


@router.delete("/{name}", status_code=204, dependencies=[ADMIN])
def delete_collection(name: str, state: StateDep) -> None:
    settings = state.settings
    Collection.destroy(settings.data_dir, name)
    state.forget(name)
    from storage.catalog import open_catalog
    from storage.fulltext import KeywordIndex

    catalog = open_catalog(settings.catalog_url())
    catalog.delete_collection(name)
    KeywordIndex(catalog.engine).drop(name)


@router.post("/{name}/images", response_model=UploadResponse, dependencies=[WRITE])
async def upload_images(
    name: str,
    state: StateDep,
    files: Annotated[list[UploadFile], File(description="One or more images")],
) -> UploadResponse:
    """Upload and index images now. Bad files are reported in ``failures``; the rest are added."""
    from indexer.uploads import Blob, index_blobs  # the indexing stack (torch) loads with the first upload

    settings = state.settings
    if len(files) > settings.max_upload_files:
        raise InvalidInputError(f"At most {settings.max_upload_files} files per request, got {len(files)}.")
    coll = Collection.open(settings.data_dir, name)
    if coll.manifest.kind != "images":
        raise InvalidInputError(f"{name!r} is a text collection; upload images to an image collection.")
    blobs, failures = [], []
    read: list[tuple[UploadFile, bytes]] = []
    for f in files:
        try:
            data = await read_limited(f, settings.max_upload_bytes)
            sniff(data, f.filename, f.content_type, settings.max_image_pixels)  # from the header: no model yet
            read.append((f, data))
        except InvalidInputError as exc:
            failures.append(UploadSkipped(filename=f.filename, reason=str(exc), code=exc.code))
    check_request_pixels(
        [data for _, data in read], settings.max_request_pixels, settings.max_image_pixels
    )  # 413 before any decode
    side = None
    if settings.decode_draft() and read:
        side = (await run_in_threadpool(state.embedder, coll.manifest.model_id)).input_size
    for f, data in read:
        try:  # off the event loop, a bounded number at a time, reduced to the model's input side
            decoded = await state.decodes.run(
                functools.partial(sniff_and_decode, data, f.filename, f.content_type, settings.max_image_pixels, side)
            )
            blobs.append(Blob(f.filename, data, decoded.format or ""))
        except InvalidInputError as exc:
            failures.append(UploadSkipped(filename=f.filename, reason=str(exc), code=exc.code))

    def ingest() -> UploadResponse:
        out = index_blobs(settings, coll, state.embedder(coll.manifest.model_id), blobs) if blobs else None
        added = [UploadAdded(filename=fn, id=i) for fn, i in (out.added if out else [])]
        return UploadResponse(
            collection=name,
            ids=[a.id for a in added],
            added=added,
            duplicates=[
                UploadSkipped(filename=fn, reason=f"already in the collection (sha256 {sha})", code="duplicate")
                for fn, sha in (out.duplicates if out else [])
            ],
            failures=failures
            + [UploadSkipped(filename=fn, reason=r, code="bad_image") for fn, r in (out.failures if out else [])],
        )

    return await state.decodes.run(ingest)  # the pipeline decodes again: same bound


@router.delete("/{name}/images/{rid}", response_model=DeleteResponse, dependencies=[WRITE])
def delete_image(name: str, rid: int, settings: SettingsDep) -> DeleteResponse:
    """Delete a record: never returned by a later search (tombstoned and removed from the index)."""
    coll = Collection.open(settings.data_dir, name)
    deleted, _ = coll.delete([rid])
    if not deleted:
        raise RecordNotFoundError(f"Collection {name!r} has no record {rid}.")
    (coll.root / "thumbs" / f"{rid}.jpg").unlink(missing_ok=True)
    return DeleteResponse(collection=name, deleted=deleted)
