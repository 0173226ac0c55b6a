"""POST /v1/search/text and /v1/search/image."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile

from api.auth import READ
from api.paths import PathView
from api.schemas import ERRORS, Result, SearchResponse, SimilarRequest, TextSearchRequest
from api.uploads import read_limited, sniff_and_decode
from search.engine import MAX_K, MAX_RERANK_K, QueryOptions, SearchResult
from search.filters import Filters

router = APIRouter(prefix="/v1/search", tags=["search"], dependencies=[READ], responses=ERRORS)


def _parse_filters(raw: str | None) -> Filters | None:
    if not raw:
        return None
    return Filters.parse(raw)  # InvalidInputError (422) naming the field


def _response(collection: str, res: SearchResult, paths: PathView) -> SearchResponse:
    results = []
    for h in res.hits:
        d = h.to_dict()
        d["uri"] = paths.show(d.get("uri"))
        results.append(Result(**{k: v for k, v in d.items() if k in Result.model_fields and v is not None}))
    return SearchResponse(collection=collection, results=results, dropped=res.dropped, timing_ms=res.timing_ms)


@router.post("/text", response_model=SearchResponse)
def search_text(body: TextSearchRequest, request: Request) -> SearchResponse:
    engine = request.app.state.blip.engine(body.collection)
    res = engine.search_text(
        body.query,
        body.k,
        rerank=body.rerank,
        rerank_k=body.rerank_k,
        fusion=body.fusion,
        mode=body.mode,
        options=body.options(),
    )
    return _response(body.collection, res, PathView(request.app.state.blip.settings))


@router.post("/similar", response_model=SearchResponse)
def search_similar(body: SimilarRequest, request: Request) -> SearchResponse:
    """More like this: the nearest records to a stored record (by its own embedding)."""
    engine = request.app.state.blip.engine(body.collection)
    return _response(
        body.collection,
        engine.search_similar(body.id, body.k, QueryOptions(filters=body.filters)),
        PathView(request.app.state.blip.settings),
    )


@router.post("/image", response_model=SearchResponse)
async def search_image(
    request: Request,
    file: Annotated[UploadFile, File(description="Query image")],
    collection: Annotated[str, Form(min_length=1, max_length=64)],
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
    target: Annotated[Literal["images", "texts", "captions"], Form()] = "images",
    rerank: Annotated[bool, Form()] = False,
    rerank_k: Annotated[int, Form(ge=1, le=MAX_RERANK_K)] = 64,
    filters: Annotated[str | None, Form(max_length=10_000, description="Filters as a JSON object")] = None,
    min_score: Annotated[float | None, Form()] = None,
    nprobe: Annotated[int | None, Form(ge=1, le=65536)] = None,
    ef_search: Annotated[int | None, Form(ge=1, le=65536)] = None,
) -> SearchResponse:
    state = request.app.state.blip
    options = QueryOptions(filters=_parse_filters(filters), min_score=min_score, nprobe=nprobe, ef_search=ef_search)
    data = await read_limited(file, state.settings.max_upload_bytes)
    image = sniff_and_decode(data, file.filename, file.content_type, state.settings.max_image_pixels).image

    def run() -> SearchResult:  # model inference off the event loop
        engine = state.engine(collection)
        if target == "captions":
            return engine.captions_for_image(image, k)
        return engine.search_image(image, k, rerank=rerank, rerank_k=rerank_k, options=options)

    from starlette.concurrency import run_in_threadpool

    return _response(collection, await run_in_threadpool(run), PathView(request.app.state.blip.settings))
