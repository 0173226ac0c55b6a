"""Liveness, readiness, and captions of an upload."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from api.auth import READ
from api.decoding import check_uploads
from api.deps import PathsDep, StateDep
from api.paths import PathView
from api.schemas import ERRORS, CaptionResponse, Health
from api.uploads import read_limited, sniff_and_decode

router = APIRouter(tags=["system"], responses=ERRORS)


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
def readyz(state: StateDep) -> Health:
    """Ready. Open to all, so it says no more than a reader may know: nothing in key mode (reads
    need a key), and model names without server paths otherwise (api/paths.py)."""
    settings = state.settings
    if settings.read_access == "key":
        return Health(status="ready")
    loaded = state.loaded()
    loaded["models"] = PathView(settings).models(loaded.get("models", []))
    return Health(status="ready", detail=loaded)


@router.get("/metrics", include_in_schema=False, dependencies=[READ])
def metrics(request: Request) -> Response:
    """Prometheus exposition: latency per route, model batch sizes, queue depths, index sizes."""
    return request.app.state.metrics.render()


@router.post("/v1/captions", response_model=CaptionResponse, dependencies=[READ])
async def caption(
    state: StateDep,
    paths: PathsDep,
    file: Annotated[UploadFile, File(description="Image to caption")],
    prompt: Annotated[
        str | None, Form(max_length=1000, description="BLIP: prefix to continue; InstructBLIP/LLaVA: the instruction")
    ] = None,
    max_new_tokens: Annotated[int, Form(ge=1, le=512)] = 30,
    num_beams: Annotated[int, Form(ge=1, le=16, description="1 = greedy")] = 1,
) -> CaptionResponse:
    from models.captioners import Decoding

    s = state.settings
    data = await read_limited(file, s.max_upload_bytes)
    check_uploads(s, [(data, file.filename, file.content_type)])  # before the captioner loads
    captioner = await run_in_threadpool(state.captioner)
    decoding = Decoding(max_new_tokens=max_new_tokens, num_beams=num_beams, prompt=prompt or None)
    await run_in_threadpool(captioner.check_decoding, decoding)
    side = captioner.input_size if s.decode_draft() else None
    image = await state.decodes.run(
        lambda: (
            sniff_and_decode(data, file.filename, file.content_type, s.max_image_pixels, side, s.decode_timeout_s).image
        )
    )
    text = (await run_in_threadpool(captioner.caption, [image], decoding))[0]
    return CaptionResponse(caption_model=paths.model(captioner.model_id) or "", caption=text)
