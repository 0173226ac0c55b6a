"""Request bodies read by hand: JSON whatever the Content-Type (clip-retrieval's front-end posts
``text/plain``), with a byte bound checked while reading, and pydantic validation errors
answered as the usual 422 problem."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from blipsearch.errors import InvalidInputError, PayloadTooLargeError

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, max_bytes: int) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLargeError(f"The request body ({length} bytes) is over the {max_bytes}-byte limit.")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLargeError(f"The request body is over the {max_bytes}-byte limit.")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, max_bytes: int) -> Any:
    """The body parsed as JSON, whatever its declared type."""
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        raise InvalidInputError("The request body is empty: send a JSON object.")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(f"The request body is not valid JSON: {exc}") from None


def validate(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise InvalidInputError("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None


def body_doc(model: type[BaseModel], *media_types: str) -> dict[str, Any]:
    """``openapi_extra`` documenting a hand-read body as ``model`` under ``media_types``."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {t: {"schema": schema} for t in media_types}}}
