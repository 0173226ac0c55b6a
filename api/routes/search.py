"""POST /v1/search/text and /v1/search/image."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from PIL import Image

from api.auth import READ, caller_scope
from api.decoding import check_request_pixels
from api.paths import PathView
from api.schemas import ERRORS, Result, SearchResponse, SimilarRequest, TextSearchRequest
from api.uploads import read_limited, sniff_and_decode
from blipsearch.errors import InvalidInputError
from search.engine import MAX_K, MAX_RERANK_K, QueryOptions, SearchResult
from search.filters import Filters
from search.vector_index import MAX_REFINE_K
from storage.text_analysis import ocr_match_fields

router = APIRouter(prefix="/v1/search", tags=["search"], dependencies=[READ], responses=ERRORS)


def _parse_filters(raw: str | None) -> Filters | None:
    if not raw:
        return None
    return Filters.parse(raw)  # InvalidInputError (422) naming the field


def _rerank_cost(request: Request, k: int, rerank_k: int) -> int:
    """Candidates an ITM re-rank will score (max of k and rerank_k), refused past
    ``BLIPSEARCH_PUBLIC_RERANK_DEPTH`` for callers without a write key."""
    depth = max(k, rerank_k)
    cap = request.app.state.blip.settings.public_rerank_depth
    if depth > cap and caller_scope(request) not in ("write", "admin"):
        raise InvalidInputError(
            f"Re-ranking {depth} candidates (the larger of k={k} and rerank_k={rerank_k}) is over the {cap} "
            "allowed without a write key (BLIPSEARCH_PUBLIC_RERANK_DEPTH); lower k or rerank_k, or send a key "
            "with scope write."
        )
    return depth


def _response(collection: str, res: SearchResult, paths: PathView, query: str | None = None) -> SearchResponse:
    results = []
    for h in res.hits:
        d = h.to_dict()
        if query is not None:  # the OCR lines of the image that match a text query (line, box, score)
            d.update(ocr_match_fields(query, h.record))
        d["uri"] = paths.show(d.get("uri"))
        results.append(Result(**{k: v for k, v in d.items() if k in Result.model_fields and v is not None}))
    return SearchResponse(
        collection=collection,
        results=results,
        dropped=res.dropped,
        timing_ms=res.timing_ms,
        partial=bool(res.missing_shards),
        missing_shards=list(res.missing_shards),
    )


@router.post("/text", response_model=SearchResponse)
def search_text(body: TextSearchRequest, request: Request) -> SearchResponse:
    state = request.app.state.blip
    cost = _rerank_cost(request, body.k, body.rerank_k) if body.rerank and body.fusion != "itc" else 0
    engine = state.engine(body.collection)
    reranker = state.reranker(body.collection, body.rerank_model) if body.rerank and body.rerank_model else None
    with state.rerank_budget.take(cost):  # 503 + Retry-After while too much re-ranking is in flight
        res = engine.search_text(
            body.query,
            body.k,
            rerank=body.rerank,
            rerank_k=body.rerank_k,
            fusion=body.fusion,
            mode=body.mode,
            options=body.options(),
            reranker=reranker,
            target=body.target,
        )
    return _response(body.collection, res, PathView(state.settings), body.query)


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
    rerank_model: Annotated[str | None, Form(min_length=1, max_length=1000)] = None,
    filters: Annotated[str | None, Form(max_length=10_000, description="Filters as a JSON object")] = None,
    min_score: Annotated[float | None, Form()] = None,
    nprobe: Annotated[int | None, Form(ge=1, le=65536)] = None,
    ef_search: Annotated[int | None, Form(ge=1, le=65536)] = None,
    refine_k: Annotated[int | None, Form(ge=0, le=MAX_REFINE_K)] = None,
) -> SearchResponse:
    state = request.app.state.blip
    options = QueryOptions(
        filters=_parse_filters(filters), min_score=min_score, nprobe=nprobe, ef_search=ef_search, refine_k=refine_k
    )
    s = state.settings
    data = await read_limited(file, s.max_upload_bytes)
    check_request_pixels([data], s.max_request_pixels)

    def decode() -> Image.Image:  # off the event loop, reduced to the model's input side
        side = state.engine(collection).embedder.input_size if s.decode_draft() else None
        return sniff_and_decode(data, file.filename, file.content_type, s.max_image_pixels, side).image

    image = await state.decodes.run(decode)

    def run() -> SearchResult:  # model inference off the event loop
        engine = state.engine(collection)
        if target == "captions":
            return engine.captions_for_image(image, k)
        cost = _rerank_cost(request, k, rerank_k) if rerank and engine.kind == "texts" else 0
        reranker = state.reranker(collection, rerank_model) if rerank and rerank_model else None
        with state.rerank_budget.take(cost):
            return engine.search_image(image, k, rerank=rerank, rerank_k=rerank_k, options=options, reranker=reranker)

    from starlette.concurrency import run_in_threadpool

    return _response(collection, await run_in_threadpool(run), PathView(request.app.state.blip.settings))
