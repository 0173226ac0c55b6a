"""Request and response models of the /v1 API (the shapes are a contract)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from blipsearch.limits import MAX_FEEDBACK_IDS, NO_MATCH_THRESHOLD
from search.filters import Filters
from search.limits import (
    DEFAULT_K,
    DEFAULT_RERANK_K,
    MAX_EF_SEARCH,
    MAX_K,
    MAX_NPROBE,
    MAX_REFINE_K,
    MAX_RERANK_K,
)
from search.results import QueryOptions

EXPLAIN_HELP = "Return the query plan and what ran (depths, re-rank, and why results are missing)."
QUERY_HELP = (
    'The search box (docs/queries.md): plain words, quoted phrases, -negation, weights (2*x, +2 "x"), '
    "dates (July 2023, last summer, since March, 2019-2021), in:PLACE, camera:X, taken:DATE, key:value filters. "
    "May be empty when positive_ids are given."
)
RAW_HELP = "Search the query as one visual text: no parsing (no dates, filters, weights or negation)."
TODAY_HELP = "The day relative dates (last summer, since March, yesterday) count from; default: today (UTC)."
POSITIVE_HELP = "Records of the collection to search more like (relevance feedback); they are not returned."
NEGATIVE_HELP = "Records of the collection to search less like; they are not returned."


class FeedbackIds(BaseModel):
    """Relevance feedback: "more like these, less like those" (records of the same collection)."""

    positive_ids: list[int] = Field(default_factory=list, max_length=MAX_FEEDBACK_IDS, description=POSITIVE_HELP)
    negative_ids: list[int] = Field(default_factory=list, max_length=MAX_FEEDBACK_IDS, description=NEGATIVE_HELP)


class TextSearchRequest(FeedbackIds):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {"collection": "photos", "query": "red car -truck"},
                {"collection": "photos", "query": '"a dog" +2 "on a beach" July 2023 in:Spain'},
                {"collection": "photos", "query": "beach", "positive_ids": [12, 40], "negative_ids": [7]},
                {"collection": "photos", "query": "a dog on a beach", "rerank": True},
            ]
        }
    }

    query: str = Field(default="", max_length=1000, description=QUERY_HELP)
    raw: bool = Field(default=False, description=RAW_HELP)
    today: date | None = Field(default=None, description=TODAY_HELP)
    collection: str = Field(min_length=1, max_length=64)
    k: int = Field(default=DEFAULT_K, ge=1, le=MAX_K)
    rerank: bool = False
    rerank_k: int = Field(default=DEFAULT_RERANK_K, ge=1, le=MAX_RERANK_K)
    rerank_model: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="BLIP / BLIP-2 ITM checkpoint to re-rank with (BLIPSEARCH_ALLOWED_MODELS or the default model).",
    )
    mode: Literal["vector", "keyword", "hybrid"] = "vector"
    target: Literal["all", "ocr", "captions"] = Field(
        default="all",
        description="Keyword and hybrid modes: the text fields searched (all; ocr: text read from the images; "
        "captions: captions, texts and metadata).",
    )
    fusion: Literal["itm+itc", "itm", "itc"] = "itm+itc"
    filters: Filters | None = None
    min_score: float | None = Field(default=None, ge=-1e6, le=1e6)
    sort: Literal["relevance", "added_at", "taken_at"] = "relevance"
    nprobe: int | None = Field(
        default=None, ge=1, le=MAX_NPROBE, description="IVF lists to probe (approximate indexes)."
    )
    ef_search: int | None = Field(default=None, ge=1, le=MAX_EF_SEARCH, description="HNSW search depth.")
    refine_k: int | None = Field(
        default=None,
        ge=0,
        le=MAX_REFINE_K,
        description="PQ/SQ indexes: shortlist re-scored exactly from the stored vectors, then cut to k (0/1: off).",
    )
    explain: bool = Field(default=False, description=EXPLAIN_HELP)

    def options(self, no_match_threshold: float = NO_MATCH_THRESHOLD) -> QueryOptions:
        return QueryOptions(
            filters=self.filters,
            min_score=self.min_score,
            sort=self.sort,
            nprobe=self.nprobe,
            ef_search=self.ef_search,
            refine_k=self.refine_k,
            no_match_threshold=no_match_threshold,
        )


class SimilarRequest(FeedbackIds):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {"collection": "photos", "id": 12},
                {"collection": "photos", "positive_ids": [12, 40, 41], "negative_ids": [7, 8]},
            ]
        }
    }

    collection: str = Field(min_length=1, max_length=64)
    id: int | None = Field(default=None, ge=0, description="The record to search more like (or give positive_ids).")
    k: int = Field(default=DEFAULT_K, ge=1, le=MAX_K)
    filters: Filters | None = None
    explain: bool = Field(default=False, description=EXPLAIN_HELP)


class OcrMatch(BaseModel):
    line: str
    box: list[list[float]] = Field(description="4 points [x, y] in the original image's pixels")
    score: float = Field(description="Share of the query's tokens found in the line")
    confidence: float | None = None


class PhotoFields(BaseModel):
    """Capture metadata and place of a photo (docs/photos.md); null where the file said nothing."""

    taken_at: datetime | None = Field(
        default=None, description="When taken: UTC, or the camera's wall clock where taken_at_local is true."
    )
    taken_at_local: bool | None = Field(default=None, description="taken_at is local time of an unknown zone.")
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    gps_alt: float | None = Field(default=None, description="Metres above sea level.")
    country_code: str | None = None
    country: str | None = None
    region: str | None = None
    city: str | None = None


class Result(PhotoFields):
    id: int
    uri: str | None = None
    score: float
    itc_score: float
    itm_score: float | None = None
    caption: str | None = None
    text: str | None = None
    external_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    width: int | None = None
    height: int | None = None
    ocr_text: str | None = None
    ocr_match: OcrMatch | None = Field(default=None, description="The OCR line that best matches a text query.")
    ocr_matches: list[OcrMatch] = Field(default_factory=list, description="Every OCR line matching the query.")


class SearchResponse(BaseModel):
    collection: str
    results: list[Result]
    dropped: list[dict[str, Any]] = Field(default_factory=list)
    timing_ms: dict[str, float]
    # Sharded serving with BLIPSEARCH_SHARD_PARTIAL: index shards that did not answer in time were
    # left out, and the results are the other shards' only (else such a query answers 503).
    partial: bool = False
    missing_shards: list[int] = Field(default_factory=list)
    # With explain: true, the query plan and what ran (search/plan.py): {"plan": ..., "ran": ...}.
    explain: dict[str, Any] | None = None
    understood: dict[str, Any] | None = Field(
        default=None,
        description="How the query was read: parts [{kind, weight, text | id, source}], filters (the shape of "
        "the request's filters), filter_sources {filter: the words it came from}.",
    )
    no_confident_match: bool = Field(
        default=False,
        description="Re-ranked queries: no result's ITM match probability reached BLIPSEARCH_NO_MATCH_THRESHOLD; "
        "the results are the nearest, not matches. Always false without re-ranking.",
    )
    empty_reason: str | None = Field(
        default=None,
        description="Why there are no results (search/why_empty.py: the same words as the CLI), e.g. "
        "'no record matches fields.format=PNG'; null when there are results.",
    )


class CollectionInfo(BaseModel):
    name: str
    kind: str
    count: int
    model_id: str
    dim: int
    vectors_per_item: int
    index: str | None
    itm_features: bool
    created_at: str
    metadata_keys: list[str] | None = Field(
        default=None, description="Keys of the records' JSON metadata (filters.fields); in GET /v1/collections/{name}."
    )
    precision: str | None = Field(
        default=None, description="Precision mode the embeddings were built with: exact, fast or mixed."
    )
    embed_dtype: str | None = Field(default=None, description="What the embedding forward computed in: fp32, bf16.")
    embed_runtime: str | None = Field(
        default=None, description="What ran the embedding forward: torch or openvino (BLIPSEARCH_FAST_RUNTIME)."
    )
    photo_fields: dict[str, int] | None = Field(
        default=None, description="How many records have each capture/place field (taken_at, gps_lat, city...)."
    )
    random_model: bool = Field(
        default=False,
        description="The collection's model is a randomly initialised test checkpoint (scripts/make_test_models.py): "
        "its scores and captions are meaningless.",
    )
    updated_at: str | None = Field(default=None, description="When the collection last changed (its manifest).")


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class Record(PhotoFields):
    id: int
    uri: str | None = None
    sha256: str
    width: int | None = None
    height: int | None = None
    format: str | None = None
    bytes: int | None = None
    caption: str | None = None
    caption_model: str | None = None
    pdq_hash: str | None = Field(default=None, description="PDQ perceptual hash of the image (64 hex digits).")
    pdq_quality: int | None = Field(default=None, description="PDQ quality, 0-100.")
    text: str | None = None
    external_id: str | None = None
    added_at: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    ocr_text: str | None = Field(default=None, description="Text read from the image (lines over the threshold)")
    ocr_lines: list[dict[str, Any]] | None = Field(
        default=None, description="Every OCR line: text, box (4 [x, y] points in the image's pixels), confidence"
    )
    ocr_engine: str | None = None
    ocr_error: str | None = None


class CaptionResponse(BaseModel):
    caption_model: str
    caption: str


class Health(BaseModel):
    status: str
    detail: dict[str, Any] = Field(default_factory=dict)


class CreateCollectionRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    model: str | None = Field(default=None, max_length=512, description="Default: BLIPSEARCH_MODEL.")
    cache_itm_features: bool = False


class UploadAdded(BaseModel):
    filename: str | None
    id: int


class UploadSkipped(BaseModel):
    filename: str | None
    reason: str
    code: str


class UploadResponse(BaseModel):
    collection: str
    ids: list[int]
    added: list[UploadAdded]
    duplicates: list[UploadSkipped]
    failures: list[UploadSkipped]


class DeleteResponse(BaseModel):
    collection: str
    deleted: list[int]


class IndexJobRequest(BaseModel):
    collection: str = Field(min_length=1, max_length=64)
    paths: list[str] = Field(min_length=1, max_length=1000)


class JobInfo(BaseModel):
    id: str
    kind: str
    collection: str
    state: str
    model_id: str | None
    counts: dict[str, Any]
    failures: list[dict[str, Any]]
    timings: dict[str, Any]
    error: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class JobList(BaseModel):
    jobs: list[JobInfo]


class Problem(BaseModel):
    """An error (RFC 9457 problem details), served as application/problem+json."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem-details errors for ``codes``."""
    content = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {code: {"model": Problem, "description": "Problem details", "content": content} for code in codes}


class ModerationCheck(BaseModel):
    policy: str
    version: str
    models: dict[str, str | None]
    decision: Literal["allow", "flag", "review", "block"]
    categories: list[dict[str, Any]]
    triggers: list[dict[str, Any]]
    consistency: dict[str, Any] | None = None
    blocklist: dict[str, Any] | None = None
    timing_ms: dict[str, float]
    checks: dict[str, Any] = Field(
        default_factory=dict, description="Evidence of hash_lists, detectors and text_rules (what each measured)."
    )


class ModerationResults(BaseModel):
    results: list[dict[str, Any]]


class ManualDecisionRequest(BaseModel):
    collection: str = Field(min_length=1, max_length=64)
    id: int = Field(ge=0)
    decision: Literal["approve", "allow", "block"] = Field(description="approve (= allow) or block.")
    note: str | None = Field(default=None, max_length=2000)


class QueueItem(BaseModel):
    collection: str
    id: int
    decision: str
    triggers: list[dict[str, Any]] = Field(description="policy, check, category, prompt, score, threshold, action.")


class ModerationQueue(BaseModel):
    collection: str
    total: int
    items: list[QueueItem]


class RecordModeration(BaseModel):
    collection: str
    id: int
    decision: str | None = Field(description="Effective decision; null when never checked.")
    manual: dict[str, Any] | None
    results: list[dict[str, Any]]


ERRORS = problems(401, 403, 404, 409, 413, 415, 422, 503)
