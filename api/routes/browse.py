"""GET /v1/collections/{name}/images: a collection's records without a query (newest first), a
page at a time; what the page shows on an empty query."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.auth import READ
from api.deps import PathsDep, SettingsDep
from api.schemas import ERRORS
from search.filters import Filters
from search.limits import MAX_K

router = APIRouter(prefix="/v1/collections", tags=["collections"], dependencies=[READ], responses=ERRORS)
MAX_BROWSE = MAX_K  # the most a search returns, so the page pages through both alike
MAX_OFFSET = 10_000_000


class BrowseItem(BaseModel):
    id: int
    uri: str | None = None
    caption: str | None = None
    text: str | None = None
    external_id: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    added_at: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class BrowseResponse(BaseModel):
    collection: str
    sort: Literal["newest", "oldest"]
    total: int = Field(description="Records the filters (and moderation) leave visible.")
    offset: int
    limit: int
    next_offset: int | None = Field(description="The offset of the next page; null on the last one.")
    results: list[BrowseItem]


def _item(rec: dict[str, Any], paths: PathsDep) -> BrowseItem:
    meta = rec.get("metadata")
    return BrowseItem(
        id=rec["id"],
        uri=paths.show(rec.get("uri")),
        caption=rec.get("caption"),
        text=rec.get("text"),
        external_id=rec.get("external_id"),
        width=rec.get("width"),
        height=rec.get("height"),
        format=rec.get("format"),
        added_at=str(rec["added_at"]) if rec.get("added_at") is not None else None,
        metadata=json.loads(meta) if isinstance(meta, str) and meta else {},
    )


@router.get("/{name}/images", response_model=BrowseResponse)
async def browse_images(
    name: str,
    settings: SettingsDep,
    paths: PathsDep,
    sort: Literal["newest", "oldest"] = "newest",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_BROWSE)] = 24,
    filters: Annotated[
        str | None, Query(max_length=20_000, description="Filters as JSON, as in the search requests.")
    ] = None,
) -> BrowseResponse:
    """The collection's records newest first (``sort=oldest``: oldest first), ``limit`` from ``offset``."""
    from service.browsing import browse

    f = Filters.parse(filters) if filters else None  # InvalidInputError (422) naming the field
    page = await run_in_threadpool(browse, settings, name, f, sort, offset, limit)
    end = offset + len(page.records)
    return BrowseResponse(
        collection=name,
        sort=sort,
        total=page.total,
        offset=offset,
        limit=limit,
        next_offset=end if end < page.total else None,
        results=[_item(r, paths) for r in page.records],
    )
