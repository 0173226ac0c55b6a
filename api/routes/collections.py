"""Collections and their records: list, describe, record, thumbnail, original file."""

from __future__ import annotations

import io
import json
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from api.auth import READ
from api.schemas import ERRORS, CollectionInfo, CollectionList, Record
from blipsearch.errors import ImageDecodeError, RecordNotFoundError
from storage.atomic import atomic_write_bytes
from storage.collection import Collection

router = APIRouter(prefix="/v1/collections", tags=["collections"], dependencies=[READ], responses=ERRORS)
THUMB_SIZE = 256


def collection_info(coll: Collection) -> CollectionInfo:
    m = coll.manifest
    return CollectionInfo(
        name=m.collection,
        kind=m.kind,
        count=m.count,
        model_id=m.model_id,
        dim=m.dim,
        vectors_per_item=m.vectors_per_item,
        index=m.index.spec if m.index else None,
        itm_features=m.itm_features is not None,
        created_at=m.created_at.isoformat(),
        precision=m.precision,
        embed_dtype=m.embed_dtype,
    )


def _record(request: Request, name: str, rid: int) -> tuple[Collection, dict]:
    coll = Collection.open(request.app.state.blip.settings.data_dir, name)
    rec = coll.get_records([rid]).get(rid)
    if rec is None:
        raise RecordNotFoundError(f"Collection {name!r} has no record {rid}.")
    return coll, rec


@router.get("", response_model=CollectionList)
def list_collections(request: Request) -> CollectionList:
    data_dir = request.app.state.blip.settings.data_dir
    names = sorted(p.parent.name for p in Path(data_dir).glob("*/manifest.json")) if Path(data_dir).is_dir() else []
    return CollectionList(collections=[collection_info(Collection.open(data_dir, n)) for n in names])


@router.get("/{name}", response_model=CollectionInfo)
def get_collection(name: str, request: Request) -> CollectionInfo:
    return collection_info(Collection.open(request.app.state.blip.settings.data_dir, name))


@router.get("/{name}/images/{rid}", response_model=Record)
def get_record(name: str, rid: int, request: Request) -> Record:
    _, rec = _record(request, name, rid)
    rec = {k: v for k, v in rec.items() if k in Record.model_fields}
    rec["added_at"] = str(rec.get("added_at"))
    rec["metadata"] = json.loads(rec["metadata"]) if rec.get("metadata") else {}
    return Record(**rec)


@router.get("/{name}/images/{rid}/file", response_model=None)
def get_file(name: str, rid: int, request: Request) -> Response:
    from indexer.sources.uri import split_tar_uri

    _, rec = _record(request, name, rid)
    uri = rec.get("uri") or ""
    if split_tar_uri(uri) is not None:  # a member of a WebDataset shard
        from indexer.sources.uri import read_uri

        try:
            data = read_uri(uri, request.app.state.blip.settings.max_file_bytes).data
        except ImageDecodeError:
            raise RecordNotFoundError(f"The original of record {rid} can no longer be read from {uri}.") from None
        fmt = rec.get("format")
        return Response(data, media_type=f"image/{fmt.lower()}" if fmt else "application/octet-stream")
    path = Path(uri)
    if not path.is_file():
        raise RecordNotFoundError(f"The original file of record {rid} is no longer at {path}.")
    return FileResponse(path)


@router.get("/{name}/images/{rid}/thumbnail")
def get_thumbnail(name: str, rid: int, request: Request) -> Response:
    coll, rec = _record(request, name, rid)
    thumb = coll.root / "thumbs" / f"{rid}.jpg"
    if not thumb.is_file():
        from indexer.decode import decode_image
        from indexer.sources.uri import read_uri

        settings = request.app.state.blip.settings
        img = decode_image(read_uri(rec["uri"], settings.max_file_bytes).data, settings.max_image_pixels).image
        img.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        atomic_write_bytes(thumb, buf.getvalue())
    return Response(thumb.read_bytes(), media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})
