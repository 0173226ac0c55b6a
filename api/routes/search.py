"""POST /v1/search/text, /v1/search/similar and /v1/search/image.

Each request resolves its collection's engine once, plans the query once (whether it
re-ranks, how deep: search/plan.py) and runs that plan; ``explain: true`` returns the plan.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from api.auth import READ, caller_scope
from api.decoding import check_uploads
from api.deps import PathsDep, StateDep
from api.paths import PathView
from api.schemas import (
    ERRORS,
    EXPLAIN_HELP,
    QUERY_HELP,
    RAW_HELP,
    Result,
    SearchResponse,
    SimilarRequest,
    TextSearchRequest,
)
from api.state import AppState
from api.uploads import read_limited, sniff_and_decode
from blipsearch.errors import InvalidInputError
from search.engine import SearchEngine
from search.filters import Filters
from search.limits import DEFAULT_K, DEFAULT_RERANK_K, MAX_EF_SEARCH, MAX_K, MAX_NPROBE, MAX_REFINE_K, MAX_RERANK_K
from search.plan import QueryPlan
from search.query.build import QueryInput, plan_for, understand
from search.query.parser import Understood
from search.query.parts import rerank_text
from search.results import QueryOptions, SearchResult
from search.why_empty import describe_empty
from storage.text_analysis import ocr_match_fields

router = APIRouter(prefix="/v1/search", tags=["search"], dependencies=[READ], responses=ERRORS)


def _parse_filters(raw: str | None) -> Filters | None:
    if not raw:
        return None
    return Filters.parse(raw)  # InvalidInputError (422) naming the field


def _check_rerank_cost(request: Request, state: AppState, plan: QueryPlan, k: int, rerank_k: int) -> int:
    """Candidates the plan's ITM re-rank will score, refused past ``BLIPSEARCH_PUBLIC_RERANK_DEPTH``
    for callers without a write key."""
    depth = plan.rerank_cost
    cap = state.settings.public_rerank_depth
    if depth > cap and caller_scope(request, state.settings) not in ("write", "admin"):
        raise InvalidInputError(
            f"Re-ranking {depth} candidates (the larger of k={k} and rerank_k={rerank_k}) is over the {cap} "
            "allowed without a write key (BLIPSEARCH_PUBLIC_RERANK_DEPTH); lower k or rerank_k, or send a key "
            "with scope write."
        )
    return depth


def _run(state: AppState, engine: SearchEngine, plan: QueryPlan, cost: int) -> SearchResult:
    """Execute ``plan``, with the re-ranker it names (loaded only now that the plan re-ranks)."""
    step = plan.rerank
    reranker = state.reranker(engine, step.model) if step is not None and not step.own_model else None
    with state.rerank_budget.take(cost):  # 503 + Retry-After while too much re-ranking is in flight
        res = engine.execute(plan, reranker)
        res.empty_reason = describe_empty(engine, res, plan, reranker, style="api")
        return res


def _response(
    collection: str,
    res: SearchResult,
    paths: PathView,
    explain: bool,
    query: str | None = None,
    understood: Understood | None = None,
) -> SearchResponse:
    results = []
    for h in res.hits:
        d = h.to_dict()
        if query:  # the OCR lines of the image that match a text query (line, box, score)
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
        explain=res.explain if explain else None,
        understood=understood.to_dict() if understood is not None else None,
        no_confident_match=res.no_confident_match,
        empty_reason=res.empty_reason,
    )


def _visual_text(u: Understood) -> str:
    """The positive text parts (what OCR lines are matched against)."""
    return rerank_text(u.parts)


@router.post("/text", response_model=SearchResponse)
def search_text(body: TextSearchRequest, request: Request, state: StateDep, paths: PathsDep) -> SearchResponse:
    """Text → image with the query language (docs/queries.md): parts, weights, negation, dates
    and filters in the text (``raw: true``: none), ``positive_ids`` / ``negative_ids`` feedback;
    ``understood`` says how the query was read."""
    state.check_rerank_model(body.rerank_model)  # cheap checks before the model loads
    engine = state.engine(body.collection)
    u = understand(
        QueryInput(
            text=body.query,
            raw=body.raw,
            positive_ids=body.positive_ids,
            negative_ids=body.negative_ids,
            today=body.today,
        )
    )
    plan = plan_for(
        engine,
        u,
        body.k,
        body.options(state.settings.no_match_threshold),
        mode=body.mode,
        target=body.target,
        rerank=body.rerank,
        rerank_k=body.rerank_k,
        fusion=body.fusion,
        rerank_model=body.rerank_model,
    )
    cost = _check_rerank_cost(request, state, plan, body.k, body.rerank_k)
    res = _run(state, engine, plan, cost)
    return _response(body.collection, res, paths, body.explain, _visual_text(u), u)


@router.post("/similar", response_model=SearchResponse)
def search_similar(body: SimilarRequest, state: StateDep, paths: PathsDep) -> SearchResponse:
    """More like this: the nearest records to a stored record (``id``, by its own embedding), or
    relevance feedback: more like ``positive_ids``, less like ``negative_ids``."""
    engine = state.engine(body.collection)
    options = QueryOptions(filters=body.filters)
    if body.id is not None and not body.positive_ids and not body.negative_ids:
        plan = engine.plan_similar(body.id, body.k, options)
        res = engine.execute(plan)
        res.empty_reason = describe_empty(engine, res, plan, style="api")
        return _response(body.collection, res, paths, body.explain)
    positive = ([body.id] if body.id is not None else []) + list(body.positive_ids)
    u = understand(QueryInput(positive_ids=positive, negative_ids=body.negative_ids))
    plan = engine.plan_query(u.parts, body.k, options=options)
    res = engine.execute(plan)
    res.empty_reason = describe_empty(engine, res, plan, style="api")
    return _response(body.collection, res, paths, body.explain, None, u)


@router.post("/image", response_model=SearchResponse)
async def search_image(
    request: Request,
    state: StateDep,
    paths: PathsDep,
    file: Annotated[UploadFile, File(description="Query image")],
    collection: Annotated[str, Form(min_length=1, max_length=64)],
    query: Annotated[
        str | None,
        Form(max_length=1000, description='A text composed with the image ("this, but at night"): ' + QUERY_HELP),
    ] = None,
    raw: Annotated[bool, Form(description=RAW_HELP)] = False,
    image_weight: Annotated[float, Form(description="The image part's weight (with query).")] = 1.0,
    text_weight: Annotated[float, Form(description="Multiplies the query's text parts' weights.")] = 1.0,
    k: Annotated[int, Form(ge=1, le=MAX_K)] = DEFAULT_K,
    target: Annotated[
        Literal["images", "texts", "captions"],
        Form(description="images (image collections), texts (text collections), or captions (image collections)."),
    ] = "images",
    rerank: Annotated[bool, Form()] = False,
    rerank_k: Annotated[int, Form(ge=1, le=MAX_RERANK_K)] = DEFAULT_RERANK_K,
    rerank_model: Annotated[str | None, Form(min_length=1, max_length=1000)] = None,
    filters: Annotated[str | None, Form(max_length=10_000, description="Filters as a JSON object")] = None,
    min_score: Annotated[float | None, Form()] = None,
    nprobe: Annotated[int | None, Form(ge=1, le=MAX_NPROBE)] = None,
    ef_search: Annotated[int | None, Form(ge=1, le=MAX_EF_SEARCH)] = None,
    refine_k: Annotated[int | None, Form(ge=0, le=MAX_REFINE_K)] = None,
    explain: Annotated[bool, Form(description=EXPLAIN_HELP)] = False,
) -> SearchResponse:
    options = QueryOptions(
        filters=_parse_filters(filters),
        min_score=min_score,
        nprobe=nprobe,
        ef_search=ef_search,
        refine_k=refine_k,
        no_match_threshold=state.settings.no_match_threshold,
    )
    s = state.settings
    data = await read_limited(file, s.max_upload_bytes)
    check_uploads(s, [(data, file.filename, file.content_type)])  # before the model loads
    state.check_rerank_model(rerank_model)
    engine = await run_in_threadpool(state.engine, collection)  # once per request: decode and query use it
    check_target(engine, target)

    def decode() -> Image.Image:  # off the event loop, reduced to the model's input side
        side = engine.embedder.input_size if s.decode_draft() else None
        return sniff_and_decode(
            data, file.filename, file.content_type, s.max_image_pixels, side, s.decode_timeout_s
        ).image

    image = await state.decodes.run(decode)
    composed = bool(query and query.strip())

    def run() -> tuple[SearchResult, Understood | None]:  # model inference off the event loop
        if not composed:
            if image_weight != 1.0 or text_weight != 1.0:
                raise InvalidInputError("image_weight and text_weight weigh an image against a query: add query.")
            if target == "captions":
                found = engine.captions_for_image(image, k, options, rerank=rerank)
                found.empty_reason = describe_empty(engine, found, style="api")
                return found, None
            plan = engine.plan_image(
                image, k, rerank=rerank, rerank_k=rerank_k, options=options, rerank_model=rerank_model
            )
            return _run(state, engine, plan, _check_rerank_cost(request, state, plan, k, rerank_k)), None
        if target == "captions":
            raise InvalidInputError("target captions takes an image alone: drop query, or search target images.")
        u = understand(
            QueryInput(
                text=query,
                raw=raw,
                text_weight=text_weight,
                image=image,
                image_weight=image_weight,
                image_source=file.filename or "file",
            )
        )
        plan = plan_for(engine, u, k, options, rerank=rerank, rerank_k=rerank_k, rerank_model=rerank_model)
        return _run(state, engine, plan, _check_rerank_cost(request, state, plan, k, rerank_k)), u

    res, u = await run_in_threadpool(run)
    return _response(collection, res, paths, explain, _visual_text(u) if u is not None else None, u)


def check_target(engine: SearchEngine, target: str) -> None:
    """An image query's target must fit the collection: never a silent image → image search."""
    if target == "texts" and engine.kind != "texts":
        raise InvalidInputError(
            f"target texts searches a text collection; {engine.coll.name!r} holds images: "
            "use target images (similar images) or captions (their captions)."
        )
