"""POST /v1/ocr: the text in an uploaded image (lines with boxes and confidences).

The upload goes through the same guarded path as image search: a size-limited read
(BLIPSEARCH_MAX_UPLOAD_BYTES, 413), a pixel check before decoding (BLIPSEARCH_MAX_REQUEST_PIXELS),
a sniffed and bounded decode, then OCR under the per-image limits (BLIPSEARCH_OCR_*). At most
``OCR_CONCURRENCY`` images are read at once per process; more requests wait their turn.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.auth import READ
from api.decoding import check_request_pixels
from api.deps import StateDep
from api.schemas import ERRORS
from api.uploads import read_limited, sniff_and_decode

router = APIRouter(tags=["search"], dependencies=[READ], responses=ERRORS)
OCR_CONCURRENCY = 2
_SLOTS = threading.BoundedSemaphore(OCR_CONCURRENCY)


class OcrLineOut(BaseModel):
    text: str
    box: list[list[float]] = Field(description="4 points [x, y] in the original image's pixels")
    confidence: float


class OcrResponse(BaseModel):
    ocr_engine: str
    width: int
    height: int
    ocr_text: str = Field(description="Lines at or above the confidence threshold, in reading order")
    lines: list[OcrLineOut] = Field(description="Every line read, with its box and confidence")
    min_confidence: float
    gated: bool = Field(description="The text-presence gate found no text, so detection did not run")
    error: str | None = Field(default=None, description="Why OCR stopped short (a per-image bound), if it did")
    seconds: float


@router.post("/v1/ocr", response_model=OcrResponse)
async def ocr(
    state: StateDep,
    file: Annotated[UploadFile, File(description="The image to read")],
    engine: Annotated[str | None, Form(pattern="^(rapidocr|tesseract)$")] = None,
) -> OcrResponse:
    from indexer.ocr import OcrOptions, OcrStage, image_array

    s = state.settings
    data = await read_limited(file, s.max_upload_bytes)
    check_request_pixels([data], s.max_request_pixels)
    options = OcrOptions.from_settings(s, engine)

    def run() -> dict[str, Any]:
        decoded = sniff_and_decode(data, file.filename, file.content_type, s.max_image_pixels, None, s.decode_timeout_s)
        with _SLOTS:
            stage = OcrStage(options)
            try:
                arr = image_array(decoded.image, options.limits.max_pixels)
                res = stage.run(arr, (decoded.width, decoded.height))  # boxes in the original's pixels
            finally:
                stage.close()
        return {"res": res, "width": decoded.width, "height": decoded.height}

    out = await run_in_threadpool(run)
    res = out["res"]
    return OcrResponse(
        ocr_engine=res.engine,
        width=out["width"],
        height=out["height"],
        ocr_text=res.text(options.min_confidence),
        lines=[OcrLineOut(**ln.to_dict()) for ln in res.lines],
        min_confidence=options.min_confidence,
        gated=res.gated,
        error=res.error,
        seconds=round(res.seconds, 4),
    )
