"""Weaviate's ``multi2vec-clip`` inference container API, so a Weaviate with
``CLIP_INFERENCE_API`` pointed at blipsearch vectorizes with blipsearch's model. Mounted unless
BLIPSEARCH_WEAVIATE_API=false.

As the container answers (weaviate/multi2vec-clip-inference ``app.py``; the module's Go client
``modules/multi2vec-clip/clients``): ``GET /.well-known/live`` and ``/.well-known/ready`` answer
204; ``GET /meta`` the model's description (a JSON object); ``POST /vectorize`` takes
``{"texts": [...], "images": [base64, ...]}`` (either may be null: Go sends nil slices so) and
answers ``{"textVectors": [...], "imageVectors": [...]}``; errors are ``{"error": message}``.
The body is read as JSON whatever its Content-Type (the Go client sets none). The model is
BLIPSEARCH_WEAVIATE_MODEL (a model id or a collection), else BLIPSEARCH_MODEL.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.auth import READ
from api.bodies import body_doc, read_json
from api.deps import StateDep
from api.protocol_errors import WEAVIATE, protocol_route
from api.protocols import (
    ProtocolInputError,
    check_flat,
    decode_all,
    embed_mixed,
    inline_image_bytes,
    json_body_cap,
    resolve_model,
)
from blipsearch import __version__
from blipsearch.config import Settings

router = APIRouter(tags=["weaviate"], route_class=protocol_route(WEAVIATE), responses=WEAVIATE.responses())


class VectorizeBody(BaseModel):
    texts: list[str] | None = None
    images: list[str] | None = None  # base64 image bytes


class VectorizeResponse(BaseModel):
    textVectors: list[list[float]]
    imageVectors: list[list[float]]


@router.get("/.well-known/live", status_code=204, response_class=Response)
@router.get("/.well-known/ready", status_code=204, response_class=Response)
def live_and_ready() -> Response:
    """204, as the inference container answers once it serves (models load on first use)."""
    return Response(status_code=204)


def _model(s: Settings) -> str:
    return resolve_model(s, s.weaviate_model, "BLIPSEARCH_WEAVIATE_MODEL")


@router.get("/meta", dependencies=[READ])
def meta(state: StateDep) -> dict[str, Any]:
    """The model the container vectorizes with (Weaviate shows this object as the module's meta)."""
    model_id = _model(state.settings)
    embedder = state.embedder(model_id)
    return {
        "model": {"name": model_id, **embedder.describe()},
        "dim": embedder.dim,
        "server": {"name": "blipsearch", "version": __version__},
    }


def _strings(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolInputError(f"{key} must be a list of strings.", key)
    return value


@router.post(
    "/vectorize",
    dependencies=[READ],
    response_model=VectorizeResponse,
    openapi_extra=body_doc(VectorizeBody, "application/json"),
)
async def vectorize(request: Request, state: StateDep) -> JSONResponse:
    """``{"texts", "images"}`` → ``{"textVectors", "imageVectors"}`` (L2-normalised, input order)."""
    s = state.settings
    body = await read_json(request, json_body_cap(s))
    if not isinstance(body, dict):
        raise ProtocolInputError("The body must be a JSON object with texts and images.")
    texts, images_b64 = _strings(body, "texts"), _strings(body, "images")
    if len(texts) + len(images_b64) > s.embed_max_items:
        raise ProtocolInputError(
            f"{len(texts) + len(images_b64)} items is over the limit of {s.embed_max_items} per request "
            "(BLIPSEARCH_EMBED_MAX_ITEMS)."
        )
    for i, t in enumerate(texts):
        if not t.strip():
            raise ProtocolInputError(f"texts[{i}] is empty.", f"texts[{i}]")
    blobs = [inline_image_bytes(b, s.max_upload_bytes, f"images[{i}]") for i, b in enumerate(images_b64)]
    model_id = await run_in_threadpool(_model, s)
    pictures = await state.decodes.run(lambda: decode_all(state, blobs)) if blobs else []

    def run() -> dict[str, Any]:
        embedder = state.embedder(model_id)
        if pictures:
            check_flat(embedder, "multi2vec-clip")
        n = len(texts)
        vecs = embed_mixed(
            state, embedder, list(enumerate(texts)), [(n + i, im) for i, im in enumerate(pictures)]
        ) if texts or pictures else np.zeros((0, embedder.dim), np.float32)  # fmt: skip
        return {"textVectors": vecs[:n].tolist(), "imageVectors": vecs[n:].tolist()}

    return JSONResponse(await run_in_threadpool(run))
