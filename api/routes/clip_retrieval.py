"""clip-retrieval's back-end protocol (``clip_back`` of clip-retrieval 2.45), so its ``ClipClient``
and static front-end query blipsearch unchanged: ``POST /knn-service``, ``GET /indices-list``,
``POST /metadata``. An "indice" is a collection. Mounted unless BLIPSEARCH_CLIP_RETRIEVAL_API=false.

Bodies are read as JSON whatever their Content-Type (the front-end posts ``text/plain``).
``image_url`` is never fetched (no server-side requests): it answers 422. ``use_mclip: true``
means "this collection's multilingual text tower": on a collection whose model is multilingual
(SigLIP 2, MetaCLIP 2, AltCLIP, Chinese-CLIP, i18n SigLIP; ``blipsearch models``) the query is
encoded by that model as always; on any other collection it answers 422 rather than searching
an English-only tower with a query the caller marked multilingual. ``aesthetic_score`` and
``aesthetic_weight`` are accepted and ignored (no aesthetic embeddings). ``use_safety_model`` /
``use_violence_detector`` hide records whose moderation decision is not ``allow``. Query semantics: search/knn.py.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from api.auth import READ
from api.bodies import body_doc, read_json, validate
from api.decoding import check_uploads, decode_uploads, draft_side
from api.deps import SettingsDep, StateDep
from api.schemas import ERRORS
from blipsearch.errors import CollectionNotFoundError, InvalidInputError, PayloadTooLargeError
from rerank.base import Candidate
from search.engine import SearchEngine
from search.knn import KnnRequest, KnnResult, embedding_query, knn
from search.limits import MAX_K
from search.query import score
from search.query.build import QueryInput, merge_filters, understand
from search.query.parts import check_parts, is_single_text
from search.results import QueryOptions
from storage.collection import Collection

router = APIRouter(tags=["clip-retrieval"], dependencies=[READ], responses=ERRORS)
RESERVED = ("id", "similarity")
MAX_IDS = 10_000
JSON_ANY = ("application/json", "text/plain")  # the front-end posts JSON as text/plain


def _number_or_blank(v: Any) -> Any:
    """clip_back's aesthetic fields: ``""``, null, a number, or a numeric string."""
    if v is None or v == "" or (isinstance(v, int | float) and not isinstance(v, bool)):
        return v
    if isinstance(v, str):
        try:
            float(v)
            return v
        except ValueError:
            pass
    raise ValueError('must be a number, a numeric string, "" or null')


class KnnServiceRequest(BaseModel):
    """The body ``ClipClient`` and the front-end send (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    text: str | None = Field(default=None, max_length=10_000)
    image: str | None = Field(default=None, description="The query image's file bytes, base64.")
    image_url: str | None = Field(default=None, description="Refused: blipsearch never fetches URLs.")
    embedding_input: list[float] | list[list[float]] | None = Field(default=None, max_length=100_000)
    modality: Literal["image", "text"] = "image"
    num_images: int = Field(default=40, ge=1, le=100_000)
    num_result_ids: int | None = Field(default=None, ge=1, le=1_000_000)
    indice_name: str | None = Field(default=None, max_length=64)
    use_mclip: bool | None = False
    deduplicate: bool | None = False
    use_safety_model: bool | None = False
    use_violence_detector: bool | None = False
    aesthetic_score: int | float | str | None = None
    aesthetic_weight: int | float | str | None = None

    @field_validator("aesthetic_score", "aesthetic_weight", mode="before")
    @classmethod
    def _aesthetic(cls, v: Any) -> Any:
        return _number_or_blank(v)


class MetadataRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ids: list[int] = Field(max_length=MAX_IDS)
    indice_name: str | None = Field(default=None, max_length=64)


def collection_names(data_dir: Path) -> list[str]:
    from storage.layout import list_names

    return list_names(data_dir)


def _indice(data_dir: Path, name: str | None) -> str:
    if name:
        return name
    names = collection_names(data_dir)
    if not names:
        raise CollectionNotFoundError("There are no collections yet: index one first.")
    return names[0]


def flat_metadata(request: Request, collection: str, rec: dict[str, Any]) -> dict[str, Any]:
    """A record as clip_back's metadata columns: its metadata, ``caption``, and ``url``."""
    meta = json.loads(rec["metadata"]) if rec.get("metadata") else {}
    out = {k: v for k, v in meta.items() if k not in RESERVED} if isinstance(meta, dict) else {}
    if "text" in rec:  # a text collection: the text is the "caption"
        out.update({"caption": rec.get("text"), "text": rec.get("text")})
        if rec.get("external_id") is not None:
            out["external_id"] = rec["external_id"]
    else:
        if rec.get("caption"):
            out["caption"] = rec["caption"]
        out["url"] = str(request.url_for("get_file", name=collection, rid=str(rec["id"])))
    return {k: v for k, v in out.items() if v is not None}


def _image_bytes(b64: str, settings: Any) -> bytes:
    data = b64.split(",", 1)[1] if b64.startswith("data:") and "," in b64 else b64
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise InvalidInputError("image must be the image file's bytes, base64-encoded.") from None
    if len(raw) > settings.max_upload_bytes:
        raise PayloadTooLargeError(f"The image is over the {settings.max_upload_bytes}-byte limit.")
    return raw


def _text_query(engine: SearchEngine, text: str, req: KnnRequest) -> np.ndarray | list[Candidate]:
    """A text in the query language (docs/queries.md): a plain text is its ITC vector; with
    weights or negation, the weighted query's vector (single-vector models) or, for BLIP-2, its
    ranked results (the score has no single vector); its filters apply to the search."""
    u = understand(QueryInput(text=text))
    check_parts(u.parts)
    req.filters = merge_filters(None, u, engine.coll).filters
    if is_single_text(u.parts):
        return engine.encode_text(str(u.parts[0].value))
    single = engine.index.vectors_per_item == 1 and engine.embedder.vectors_per_image == 1
    if single:
        vec = score.encode(u.parts, engine.index.dim, True, engine.part_vectors).combined
        assert vec is not None
        return vec
    if req.deduplicate or (req.modality == "text" and engine.kind == "images"):
        raise InvalidInputError(
            "A weighted text on a BLIP-2 collection is ranked by its parts' scores: deduplicate and modality text "
            "do not apply to it. Send one plain text, or drop them."
        )
    plan = engine.plan_query(u.parts, max(1, min(req.n, MAX_K)), options=QueryOptions(filters=req.filters))
    return [Candidate(h.id, h.score) for h in engine.execute(plan).hits]


def _query_vector(engine: SearchEngine, body: KnnServiceRequest, image: Any) -> np.ndarray:
    if image is not None:  # exactly search_image's query encode
        return engine.embedder.embed_pixels(engine.embedder.preprocess([image]))[0]
    return embedding_query(engine, body.embedding_input)


@router.post("/knn-service", response_model=list[dict[str, Any]], openapi_extra=body_doc(KnnServiceRequest, *JSON_ANY))
async def knn_service(request: Request, response: Response, state: StateDep) -> list[dict[str, Any]]:
    """Nearest neighbours by text, image (base64) or embedding: a bare array sorted by similarity,
    ``num_result_ids`` long; the first ``num_images`` carry the record's metadata. Under sharded
    serving with partial results on, index shards left out are named in ``X-Missing-Shards``."""
    s = state.settings
    body = validate(KnnServiceRequest, await read_json(request, s.max_upload_bytes * 4 // 3 + (1 << 20)))
    if body.image_url:
        raise InvalidInputError(
            "image_url is not supported: blipsearch never fetches URLs. Send the image itself, base64, in 'image'."
        )
    if not body.text and not body.image and body.embedding_input is None:
        raise InvalidInputError("Send one of text, image (base64) or embedding_input.")
    name = _indice(s.data_dir, body.indice_name)
    n_ids = min(body.num_result_ids or body.num_images, s.clip_retrieval_max_results)
    req = KnnRequest(
        n=n_ids,
        modality=body.modality,
        deduplicate=bool(body.deduplicate),
        dedup_threshold=s.clip_retrieval_dedup_threshold,
        only_allowed=bool(body.use_safety_model or body.use_violence_detector),
        max_depth=s.clip_retrieval_max_results,
    )

    image = None
    if not body.text and body.image:  # the API's one decode path: pixel budget, decode gate, reduced decode
        raw = _image_bytes(body.image, s)
        check_uploads(s, [(raw, None, None)])  # 413 / 415 before the model loads
        engine = await run_in_threadpool(state.engine, name)
        side = draft_side(s, engine.embedder.input_size)
        image = (await decode_uploads(state.decodes, s, [(raw, None, None)], side))[0].image

    def run() -> tuple[list[dict[str, Any]], tuple[int, ...]]:
        engine = state.engine(name)
        if body.use_mclip and not engine.embedder.multilingual:
            raise InvalidInputError(
                f"use_mclip: collection {name!r} has no multilingual text tower (its model is a "
                f"{engine.embedder.family} checkpoint that reads English). "
                "Send use_mclip: false, or query a collection indexed with a multilingual model "
                "(siglip2, metaclip_2, altclip, chinese_clip: see `blipsearch models`)."
            )
        query = _text_query(engine, body.text, req) if body.text else _query_vector(engine, body, image)
        found = KnnResult(query) if isinstance(query, list) else knn(engine, query, req)
        hits = found.hits
        head = [h.id for h in hits[: body.num_images]]
        records = engine.coll.get_records(head)
        out = []
        for i, h in enumerate(hits):
            row: dict[str, Any] = {}
            if i < len(head) and h.id in records:
                row.update(flat_metadata(request, name, records[h.id]))
            row.update({"id": h.id, "similarity": float(h.itc)})
            out.append(row)
        return out, found.missing_shards

    out, missing = await run_in_threadpool(run)
    if missing:
        response.headers["X-Missing-Shards"] = ",".join(map(str, missing))
    return out


@router.get("/indices-list", response_model=list[str])
def indices_list(settings: SettingsDep) -> list[str]:
    """The collection names (clip-retrieval's indices)."""
    return collection_names(settings.data_dir)


@router.post("/metadata", response_model=list[dict[str, Any]], openapi_extra=body_doc(MetadataRequest, *JSON_ANY))
async def metadata(request: Request, state: StateDep) -> list[dict[str, Any]]:
    """``{"ids", "indice_name"}`` → ``[{"id", "metadata"}]`` in the asked order; unknown ids are left out."""
    body = validate(MetadataRequest, await read_json(request, 1 << 22))

    def run() -> list[dict[str, Any]]:
        name = _indice(state.settings.data_dir, body.indice_name)
        records = Collection.open(state.settings.data_dir, name).get_records(body.ids)
        return [{"id": i, "metadata": flat_metadata(request, name, records[i])} for i in body.ids if i in records]

    return await run_in_threadpool(run)
