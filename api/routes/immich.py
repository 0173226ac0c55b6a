"""Immich's machine-learning API, so an Immich server pointed at blipsearch
(``IMMICH_MACHINE_LEARNING_URL``) gets its smart-search (CLIP) embeddings from blipsearch's
models. Mounted unless BLIPSEARCH_IMMICH_API=false.

The request shape is Immich's own, read from its server's ``machine-learning.repository.ts``
and its ML server's ``immich_ml/main.py`` (the commits are named in docs/protocols.md):
``POST /predict`` multipart with ``entries`` (JSON such as
``{"clip": {"visual": {"modelName": ...}}}`` or ``{"clip": {"textual": {"modelName": ...,
"options": {"language": ...}}}}``) and the ``image`` file or the ``text`` field. The answer is
``{"clip": "<the embedding as a JSON array string>"}``, plus ``imageHeight`` / ``imageWidth`` for
an image. Other tasks (facial-recognition, ocr, ...) answer 422: blipsearch does not serve them.
Errors are FastAPI's ``{"detail": ...}``, as Immich's own ML server answers.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from api.auth import READ
from api.deps import StateDep
from api.protocol_errors import IMMICH, protocol_route
from api.protocols import ProtocolInputError, check_flat, decode_all, resolve_model
from blipsearch.errors import PayloadTooLargeError

router = APIRouter(tags=["immich"], route_class=protocol_route(IMMICH), responses=IMMICH.responses())
MAX_ENTRIES_BYTES = 64 * 1024


class PredictResponse(BaseModel):
    clip: str = Field(description="The embedding as a JSON array, in a string (as Immich stores it).")
    imageHeight: int | None = None
    imageWidth: int | None = None


_FORM = {
    "type": "object",
    "required": ["entries"],
    "properties": {
        "entries": {"type": "string", "description": 'JSON: {"clip": {"visual" | "textual": {"modelName": ...}}}'},
        "image": {"type": "string", "format": "binary"},
        "text": {"type": "string"},
    },
}
_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _FORM}}}}


def _unprocessable(message: str) -> ProtocolInputError:
    return ProtocolInputError(message, "entries", status=422, code="unsupported_task")


def parse_entries(raw: Any) -> tuple[str, str]:
    """``entries`` as ``(type, modelName)``: one ``clip`` entry, ``visual`` or ``textual``."""
    if not isinstance(raw, str) or len(raw) > MAX_ENTRIES_BYTES:
        raise _unprocessable("Invalid request format: entries must be a JSON form field of at most 64 KiB.")
    try:
        entries = json.loads(raw)
    except ValueError:
        raise _unprocessable("Invalid request format: entries is not JSON.") from None
    if not isinstance(entries, dict) or not entries:
        raise _unprocessable("Invalid request format: entries must be an object of tasks.")
    other = sorted(str(t) for t in entries if t != "clip")
    if other:
        raise _unprocessable(
            f"blipsearch does not serve the Immich task(s) {', '.join(other)}: only 'clip' (smart search). Point "
            "those tasks at Immich's own machine-learning server."
        )
    types = entries["clip"]
    if not isinstance(types, dict) or len(types) != 1:
        raise _unprocessable("Invalid request format: clip needs exactly one of 'visual' or 'textual'.")
    ((kind, entry),) = types.items()
    if kind not in ("visual", "textual"):
        raise _unprocessable(f"blipsearch does not serve clip type {kind!r}: only 'visual' and 'textual'.")
    if not isinstance(entry, dict) or not isinstance(entry.get("modelName"), str) or not entry["modelName"]:
        raise _unprocessable("Invalid request format: the entry needs a modelName.")
    return kind, entry["modelName"]


def immich_model(settings: Any, model_name: str) -> str:
    """Immich's ``modelName`` as a blipsearch model: BLIPSEARCH_IMMICH_MODELS first, then a
    collection, the default model or an allowed model (resolve_model)."""
    mapped = settings.immich_models.get(model_name)
    try:
        return resolve_model(settings, mapped or model_name, "modelName")
    except ProtocolInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - unknown names answer 422, as Immich's own server does
        raise _unprocessable(f"{exc} Map Immich's model names with BLIPSEARCH_IMMICH_MODELS.") from None


@router.get("/ping", response_class=PlainTextResponse)
def ping() -> PlainTextResponse:
    """Immich's health check: ``pong``."""
    return PlainTextResponse("pong")


@router.post("/predict", dependencies=[READ], response_model=PredictResponse, openapi_extra=_DOC)
async def predict(request: Request, state: StateDep) -> JSONResponse:
    """Immich's ``/predict`` for smart search (``clip`` visual / textual)."""
    s = state.settings
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > s.max_upload_bytes + MAX_ENTRIES_BYTES + (1 << 16):
        raise PayloadTooLargeError(f"The request body ({length} bytes) is over the image limit {s.max_upload_bytes}.")
    try:
        form = await request.form(max_files=1, max_fields=4, max_part_size=MAX_ENTRIES_BYTES)
    except HTTPException as exc:
        raise ProtocolInputError(f"Unreadable multipart body: {exc.detail}", status=422) from None
    kind, model_name = parse_entries(form.get("entries"))
    image, text = form.get("image"), form.get("text")
    if kind == "visual":
        if not isinstance(image, UploadFile):
            raise ProtocolInputError(
                "clip visual needs the image file in 'image' (an assetId-only request cannot be served: blipsearch "
                "cannot read Immich's storage).",
                "image",
                status=422,
            )
        data = await image.read(s.max_upload_bytes + 1)
        if len(data) > s.max_upload_bytes:
            raise PayloadTooLargeError(f"The image is over the {s.max_upload_bytes}-byte limit.")
        if not data:
            raise ProtocolInputError("The image is empty.", "image", status=400)
    elif not isinstance(text, str) or not text.strip():
        raise ProtocolInputError("clip textual needs the 'text' field.", "text", status=400)
    model_id = await run_in_threadpool(immich_model, s, model_name)
    picture = (await state.decodes.run(lambda: decode_all(state, [data])))[0] if kind == "visual" else None
    words = text if isinstance(text, str) else ""  # a str in the textual branch (checked above)

    def run() -> dict[str, Any]:
        embedder = state.embedder(model_id)
        if picture is not None:
            check_flat(embedder, "Immich's API")
            vec = state.embed_images(embedder, [picture])[0]
            return {"clip": _serialize(vec), "imageHeight": picture.height, "imageWidth": picture.width}
        return {"clip": _serialize(state.embed_texts(embedder, [words])[0])}

    return JSONResponse(await run_in_threadpool(run))


def _serialize(vec: Any) -> str:
    """The vector as Immich's ML server sends it: a compact JSON array in a string."""
    return json.dumps([float(x) for x in vec.reshape(-1)], separators=(",", ":"))
