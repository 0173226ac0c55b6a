"""POST /v1/embed: the ITC vectors of texts or images, as search computes its query vectors.

JSON ``{"texts": [...], "collection"?, "model"?}``, or multipart with ``files`` (images) and
the same fields. Items share forward passes with each other and with concurrent queries
(the model's micro-batchers). Bounds: BLIPSEARCH_EMBED_MAX_ITEMS items (422 past it), each
image within BLIPSEARCH_MAX_UPLOAD_BYTES and a JSON body too (413 past them).
"""

from __future__ import annotations

from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi import UploadFile as FastAPIUpload
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from api.auth import READ
from api.bodies import read_json, validate
from api.decoding import check_uploads, decode_uploads, draft_side
from api.deps import StateDep
from api.paths import PathView
from api.schemas import ERRORS
from api.uploads import read_limited
from blipsearch.errors import InvalidInputError, PayloadTooLargeError
from search.embedding import check_count, check_texts, payload, resolve_model

router = APIRouter(tags=["search"], dependencies=[READ], responses=ERRORS)


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, max_length=4096)
    collection: str | None = Field(default=None, min_length=1, max_length=64, description="Use its model.")
    model: str | None = Field(
        default=None, max_length=512, description="BLIPSEARCH_MODEL or one of BLIPSEARCH_ALLOWED_MODELS."
    )


class EmbedResponse(BaseModel):
    model: str
    dim: int
    vectors_per_item: int = Field(description="1, or 32 for BLIP-2 images (one vector per query token).")
    embeddings: list[list[float]] | list[list[list[float]]]


_MULTIPART = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "collection": {"type": "string", "maxLength": 64},
        "model": {"type": "string", "maxLength": 512},
    },
}
_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": EmbedRequest.model_json_schema(ref_template="#/components/schemas/{model}")},
            "multipart/form-data": {"schema": _MULTIPART},
        },
    }
}


def _field(form: Any, key: str) -> str | None:
    value = form.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{key!r} must be a form field, not a file.")
    return value


@router.post("/v1/embed", response_model=EmbedResponse, openapi_extra=_DOC)
async def embed(request: Request, state: StateDep) -> JSONResponse:
    """L2-normalised float32 embeddings, in input order, from the collection's (or the named, allowed) model."""
    s = state.settings
    images: list[Any] = []
    texts: list[str] = []
    blobs: list[tuple[bytes, str | None, str | None]] = []
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=s.embed_max_items + 1, max_fields=s.embed_max_items + 8)
        except HTTPException as exc:
            raise InvalidInputError(f"Unreadable multipart body: {exc.detail}") from None
        uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        texts = [t for t in form.getlist("texts") if isinstance(t, str)]
        collection, model = _field(form, "collection"), _field(form, "model")
        if uploads and texts:
            raise InvalidInputError("Send texts or image files, not both in one request.")
        if texts:
            check_texts(texts, s.embed_max_items)
        else:
            check_count(len(uploads), s.embed_max_items)
        total = 0
        for up in uploads:
            data = await read_limited(cast(FastAPIUpload, up), s.max_upload_bytes)
            total += len(data)
            if total > s.max_upload_bytes * s.max_upload_files:
                raise PayloadTooLargeError("The images are over the request's byte limit.")
            blobs.append((data, up.filename, up.content_type))
    else:
        body = validate(EmbedRequest, await read_json(request, s.max_upload_bytes))
        texts, collection, model = body.texts, body.collection, body.model
        check_texts(texts, s.embed_max_items)

    if not texts:
        check_uploads(s, blobs)  # 413 / 415 / 422 before any model load

    def load() -> Any:
        model_id = resolve_model(s.data_dir, s.model, collection, model, {s.model, *s.allowed_models})
        return state.embedder(model_id)

    embedder = await run_in_threadpool(load)
    if not texts:  # the API's one decode path: pixel budget, decode gate, reduced decode
        decoded = await decode_uploads(state.decodes, s, blobs, draft_side(s, embedder.input_size))
        images.extend(d.image for d in decoded)

    def run() -> dict[str, Any]:
        if texts:
            return payload(embedder, state.embed_texts(embedder, texts), "text")
        return payload(embedder, state.embed_images(embedder, images), "image")

    out = await run_in_threadpool(run)
    return JSONResponse({**out, "model": PathView(s).model(out["model"])})
