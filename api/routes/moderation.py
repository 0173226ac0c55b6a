"""Moderation: check an upload against a named policy; read stored batch results."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from api.auth import READ
from api.decoding import check_request_pixels
from api.schemas import ERRORS, ModerationCheck, ModerationResults
from api.uploads import read_limited, sniff_and_decode

router = APIRouter(prefix="/v1/moderation", tags=["moderation"], dependencies=[READ], responses=ERRORS)


@router.post("/check", response_model=ModerationCheck)
async def check(
    request: Request,
    file: Annotated[UploadFile, File(description="Image to check")],
    policy: Annotated[str, Form(min_length=1, max_length=64, description="Policy name (BLIPSEARCH_POLICY_DIR)")],
    text: Annotated[str | None, Form(max_length=2000, description="Accompanying text: consistency")] = None,
) -> ModerationCheck:
    state = request.app.state.blip
    s = state.settings
    data = await read_limited(file, s.max_upload_bytes)
    check_request_pixels([data], s.max_request_pixels)
    image = await state.decodes.run(  # off the event loop, a bounded number at a time
        lambda: sniff_and_decode(data, file.filename, file.content_type, s.max_image_pixels).image
    )

    def run() -> ModerationCheck:
        moderator = state.moderator(policy)
        res = moderator.check_images([image], [text])[0]
        p = moderator.policy
        return ModerationCheck(policy=p.name, version=p.version, models=moderator.model_ids, **res.to_dict())

    return await run_in_threadpool(run)


@router.get("/results", response_model=ModerationResults)
def results(
    request: Request,
    collection: Annotated[str | None, Query(max_length=64)] = None,
    decision: Annotated[Literal["allow", "flag", "review", "block"] | None, Query()] = None,
    policy: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> ModerationResults:
    from moderation.store import query_results
    from storage.catalog import open_catalog

    rows: list[dict[str, Any]] = query_results(
        open_catalog(request.app.state.blip.settings.catalog_url()), collection, decision, policy, limit, offset
    )
    return ModerationResults(results=rows)
