"""Collections and their records: list, describe, record, thumbnail, original file."""

from __future__ import annotations

import io
import json

from fastapi import APIRouter
from fastapi.responses import Response

from api.auth import READ
from api.decoding import DecodeGate
from api.deps import PathsDep, SettingsDep, StateDep
from api.member_cache import MEMBER_CACHE_DIR, MemberCache
from api.paths import PathView
from api.schemas import ERRORS, CollectionInfo, CollectionList, Record
from api.security import file_headers
from blipsearch.config import Settings
from blipsearch.errors import ImageDecodeError, RecordNotFoundError, SourceUnavailableError
from media.stored import ImageLimits, StoredImages
from storage.atomic import atomic_write_bytes
from storage.collection import Collection
from storage.layout import list_names

router = APIRouter(prefix="/v1/collections", tags=["collections"], dependencies=[READ], responses=ERRORS)
THUMB_SIZE = 256


def collection_info(coll: Collection, paths: PathView) -> CollectionInfo:
    from datetime import datetime, timezone

    from models.test_checkpoints import is_random_model
    from storage.manifest import MANIFEST_NAME
    from storage.photo_counts import photo_field_counts

    try:  # every change to a collection commits a new manifest
        mtime = (coll.root / MANIFEST_NAME).stat().st_mtime
        updated = datetime.fromtimestamp(mtime, timezone.utc).isoformat()
    except OSError:
        updated = None
    summary = coll.manifest.summary()
    return CollectionInfo(
        **{**summary, "model_id": paths.model(summary["model_id"])},
        photo_fields=photo_field_counts(coll),
        random_model=is_random_model(summary["model_id"]),
        updated_at=updated,
    )


def _record(settings: Settings, name: str, rid: int) -> tuple[Collection, dict]:
    coll = Collection.open(settings.data_dir, name)
    rec = coll.get_records([rid]).get(rid)
    if rec is None:
        raise RecordNotFoundError(f"Collection {name!r} has no record {rid}.")
    return coll, rec


@router.get("", response_model=CollectionList)
def list_collections(settings: SettingsDep, paths: PathsDep) -> CollectionList:
    data_dir = settings.data_dir
    names = list_names(data_dir)
    return CollectionList(collections=[collection_info(Collection.open(data_dir, n), paths) for n in names])


@router.get("/{name}", response_model=CollectionInfo)
def get_collection(name: str, settings: SettingsDep, paths: PathsDep) -> CollectionInfo:
    """The collection, with ``metadata_keys``: the keys its records' JSON metadata use (filters.fields)."""
    from storage.metadata_keys import metadata_keys

    coll = Collection.open(settings.data_dir, name)
    return collection_info(coll, paths).model_copy(update={"metadata_keys": metadata_keys(coll)})


@router.get("/{name}/images/{rid}", response_model=Record)
def get_record(name: str, rid: int, settings: SettingsDep, paths: PathsDep) -> Record:
    _, rec = _record(settings, name, rid)
    rec = {k: v for k, v in rec.items() if k in Record.model_fields}
    rec["uri"] = paths.show(rec.get("uri"))
    rec["added_at"] = str(rec.get("added_at"))
    rec["metadata"] = json.loads(rec["metadata"]) if rec.get("metadata") else {}
    rec["ocr_lines"] = json.loads(rec["ocr_lines"]) if rec.get("ocr_lines") else None
    return Record(**rec)


def _stored(settings: Settings, coll: Collection, draft: int | None = None) -> StoredImages:
    """The collection's stored-image reader; ``draft``: decode at reduced scale, never below it."""
    limits = ImageLimits.from_settings(settings, draft=draft, reduce=draft is not None)
    return StoredImages(coll.uri_aliases(), limits)


def original_bytes(settings: Settings, coll: Collection, rec: dict) -> bytes:
    """The record's original bytes, only if still the regular file (or tar member) that was
    indexed: 404 when gone or a symlink, 409 when changed (media/stored.py). A member of a
    compressed tar shard is extracted once and then served from the collection's member cache
    (api/member_cache.py), so one read costs one member, not the shard."""
    reader = _stored(settings, coll)
    cache = MemberCache(coll.root / MEMBER_CACHE_DIR, reader.aliases)
    return cache.read(rec.get("uri") or "", rec.get("sha256"), reader.limits.max_bytes, lambda: _original(reader, rec))


def _original(reader: StoredImages, rec: dict) -> bytes:
    try:
        return reader.read(rec.get("uri"), rec.get("sha256"))
    except (SourceUnavailableError, ImageDecodeError) as exc:
        raise SourceUnavailableError(f"The original of record {rec.get('id')} can no longer be served: {exc}") from None


@router.get("/{name}/images/{rid}/file", response_model=None)
def get_file(name: str, rid: int, settings: SettingsDep) -> Response:
    coll, rec = _record(settings, name, rid)
    data = original_bytes(settings, coll, rec)
    media_type, headers = file_headers(rec.get("format"), rid)
    return Response(data, media_type=media_type, headers=headers)


@router.get("/{name}/images/{rid}/thumbnail")
def get_thumbnail(name: str, rid: int, state: StateDep) -> Response:
    coll, rec = _record(state.settings, name, rid)
    data = thumbnail_bytes(state.settings, coll, rec, state.decodes)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})


def thumbnail_bytes(settings: Settings, coll: Collection, rec: dict, decodes: DecodeGate | None = None) -> bytes:
    """The record's JPEG thumbnail (at most THUMB_SIZE a side), made once from the original:
    decoded reduced to the thumbnail's side, through ``decodes`` (the API's decode gate) when given."""
    thumb = coll.root / "thumbs" / f"{rec['id']}.jpg"
    if not thumb.is_file():
        reader = _stored(settings, coll, draft=THUMB_SIZE)  # a thumbnail needs no full decode
        data = _original(reader, rec)
        img = decodes.run_sync(lambda: reader.decode(data).image) if decodes else reader.decode(data).image
        img.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        atomic_write_bytes(thumb, buf.getvalue())
    return thumb.read_bytes()
