"""Request bodies read by hand: JSON whatever the Content-Type (clip-retrieval's front-end posts
``text/plain``), with a byte bound checked while reading, and pydantic validation errors
answered as the usual 422 problem."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from blipsearch.errors import InvalidInputError, PayloadTooLargeError

M = TypeVar("M", bound=BaseModel)
MAX_JSON_DEPTH = 64
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def check_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse (422) JSON nested deeper than ``limit``, before parsing it (the parser recurses)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    depth = deepest = 0
    for c in _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS):
        depth += 1 if c in b"[{" else -1
        deepest = max(deepest, depth)
        if deepest > limit:
            raise InvalidInputError(f"The JSON body is nested deeper than {limit} levels.")


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
    check_depth(raw)
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
