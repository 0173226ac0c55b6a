"""Moderation: check an upload against a named policy; read stored batch results; the review
queue (records flagged or sent to review) and manual decisions (write scope) that search honours."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from api.auth import READ, WRITE
from api.decoding import check_request_pixels
from api.deps import SettingsDep, StateDep
from api.paths import PathView
from api.schemas import (
    ERRORS,
    ManualDecisionRequest,
    ModerationCheck,
    ModerationQueue,
    ModerationResults,
    QueueItem,
    RecordModeration,
)
from api.uploads import read_limited, sniff_and_decode
from blipsearch.config import Settings
from blipsearch.errors import RecordNotFoundError
from storage.api_keys import KeyInfo
from storage.catalog import Catalog, open_catalog
from storage.collection import Collection

router = APIRouter(prefix="/v1/moderation", tags=["moderation"], dependencies=[READ], responses=ERRORS)


@router.post("/check", response_model=ModerationCheck)
async def check(
    state: StateDep,
    file: Annotated[UploadFile, File(description="Image to check")],
    policy: Annotated[str, Form(min_length=1, max_length=64, description="Policy name (BLIPSEARCH_POLICY_DIR)")],
    text: Annotated[str | None, Form(max_length=2000, description="Accompanying text: consistency")] = None,
) -> ModerationCheck:
    s = state.settings
    data = await read_limited(file, s.max_upload_bytes)
    check_request_pixels([data], s.max_request_pixels, s.max_image_pixels)
    image = await state.decodes.run(  # off the event loop, a bounded number at a time
        lambda: sniff_and_decode(data, file.filename, file.content_type, s.max_image_pixels).image
    )

    def run() -> ModerationCheck:
        moderator = state.moderator(policy)
        res = moderator.check_images([image], [text])[0]
        p = moderator.policy
        models = {k: PathView(s).model(v) for k, v in moderator.model_ids.items()}
        return ModerationCheck(policy=p.name, version=p.version, models=models, **res.to_dict())

    return await run_in_threadpool(run)


@router.get("/results", response_model=ModerationResults)
def results(
    settings: SettingsDep,
    collection: Annotated[str | None, Query(max_length=64)] = None,
    decision: Annotated[Literal["allow", "flag", "review", "block"] | None, Query()] = None,
    policy: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> ModerationResults:
    from moderation.store import query_results

    rows: list[dict[str, Any]] = query_results(
        open_catalog(settings.catalog_url()), collection, decision, policy, limit, offset
    )
    return ModerationResults(results=rows)


def _catalog(settings: Settings) -> Catalog:
    return open_catalog(settings.catalog_url())


def _existing(settings: Settings, collection: str, rid: int) -> None:
    coll = Collection.open(settings.data_dir, collection)
    if rid not in coll.get_records([rid]):
        raise RecordNotFoundError(f"Collection {collection!r} has no record {rid}.")


@router.get("/queue", response_model=ModerationQueue)
def queue(
    settings: SettingsDep,
    collection: Annotated[str, Query(min_length=1, max_length=64)],
    decision: Annotated[list[Literal["flag", "review", "block", "allow"]] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> ModerationQueue:
    """Records whose effective decision is ``flag`` or ``review`` (or the ``decision``s asked
    for), with the category, score and prompt of each trigger that led there."""
    from moderation.store import review_queue

    Collection.open(settings.data_dir, collection)  # 404 for an unknown collection
    total, items = review_queue(_catalog(settings), collection, decision or ("flag", "review"), limit, offset)
    return ModerationQueue(collection=collection, total=total, items=[QueueItem(**i) for i in items])


@router.get("/records/{collection}/{rid}", response_model=RecordModeration)
def record(collection: str, rid: int, settings: SettingsDep) -> RecordModeration:
    """One record's effective decision, its manual decision if any, and each policy's latest result."""
    from moderation.store import record_decision

    _existing(settings, collection, rid)
    return RecordModeration(**record_decision(_catalog(settings), collection, rid))


@router.post("/decisions", response_model=RecordModeration)
def decide(
    body: ManualDecisionRequest, settings: SettingsDep, key: Annotated[KeyInfo | None, WRITE] = None
) -> RecordModeration:
    """A manual decision: ``approve`` (allow) or ``block``. It wins over every automatic result;
    search honours it at once (blocked records are hidden, approved ones leave the review queue)."""
    from moderation.store import record_decision, save_manual

    _existing(settings, body.collection, body.id)
    catalog = _catalog(settings)
    decision = "allow" if body.decision in ("approve", "allow") else "block"
    save_manual(catalog, body.collection, body.id, decision, body.note or "", by=key.id if key else "")
    return RecordModeration(**record_decision(catalog, body.collection, body.id))
