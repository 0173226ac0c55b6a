"""Errors in each peer protocol's own shape, whoever raised them.

* Inside a protocol's routes, ``protocol_route(shape)`` (an ``APIRoute`` class) answers domain
  errors, validation errors and HTTP errors in the protocol's shape, with ``param`` when known.
* Before a route runs (the request guard's 401/403/413/503, an unknown path, a 500), the
  ``ProtocolErrors`` middleware rewrites the problem+json answer for the protocol's paths,
  keeping the status and the headers that matter (``Retry-After``, ``WWW-Authenticate``).

Shapes: OpenAI ``{"error": {"message", "type", "param", "code"}}`` (its 422s are 400s, as
OpenAI answers them); Immich ML ``{"detail": message}`` (FastAPI's, which Immich's server logs);
Weaviate's inference container ``{"error": message}`` (what its Go client reads).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from api.problems import PROBLEM
from blipsearch.errors import BlipsearchError, OverloadedError, UnauthorizedError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGI = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


@dataclass(frozen=True)
class Shape:
    name: str
    prefixes: tuple[str, ...]
    body: Callable[[int, str, str, str | None], tuple[int, dict[str, Any]]]
    schema: dict[str, Any]
    codes: tuple[int, ...]

    def responses(self) -> dict[int | str, dict[str, Any]]:
        """OpenAPI ``responses`` documenting this protocol's error answers."""
        content = {"application/json": {"schema": self.schema}}
        return {code: {"description": f"{self.name} error", "content": content} for code in self.codes}

    def matches(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)

    def response(self, status: int, message: str, code: str, param: str | None, headers: dict[str, str]) -> Response:
        status, body = self.body(status, message, code, param)
        return JSONResponse(body, status_code=status, headers=headers)


def _openai(status: int, message: str, code: str, param: str | None) -> tuple[int, dict[str, Any]]:
    status = 400 if status == 422 else status
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _object(**props: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(props), "properties": props}


_STR = {"type": "string"}
_NULLABLE = {"anyOf": [{"type": "string"}, {"type": "null"}]}
_OPENAI_ERROR = _object(error=_object(message=_STR, type=_STR, param=_NULLABLE, code=_NULLABLE))
OPENAI = Shape(
    "openai", ("/v1/embeddings", "/v1/moderations"), _openai, _OPENAI_ERROR, (400, 401, 403, 404, 409, 413, 415, 503)
)
IMMICH = Shape(
    "immich",
    ("/predict", "/ping"),
    lambda st, msg, _c, _p: (st, {"detail": msg}),
    _object(detail=_STR),
    (400, 401, 403, 404, 409, 413, 415, 422, 503),
)
WEAVIATE = Shape(
    "weaviate",
    ("/vectorize", "/meta", "/.well-known"),
    lambda st, msg, _c, _p: (st, {"error": msg}),
    _object(error=_STR),
    (400, 401, 403, 404, 409, 413, 415, 422, 503),
)
SHAPES = (OPENAI, IMMICH, WEAVIATE)


def _headers(err: BlipsearchError) -> dict[str, str]:
    if isinstance(err, OverloadedError):
        return {"Retry-After": str(err.retry_after)}
    if isinstance(err, UnauthorizedError):
        return {"WWW-Authenticate": "Bearer"}
    return {}


def _validation_param(err: RequestValidationError) -> tuple[str, str | None]:
    errors = err.errors()
    if not errors:
        return "The request failed validation.", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "form", "query")]
    param = ".".join(loc) or None
    return f"{param + ': ' if param else ''}{first.get('msg', 'invalid value')}", param


def protocol_route(shape: Shape) -> type[APIRoute]:
    """An ``APIRoute`` whose errors are answered in ``shape`` (server paths hidden, as problems are)."""

    class ProtocolRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def answer(request: Request) -> Response:
                try:
                    return await handler(request)
                except BlipsearchError as err:
                    from api.paths import PathView

                    message = PathView(request.app.state.blip.settings).text(str(err)) or type(err).__name__
                    param = getattr(err, "param", None)
                    return shape.response(err.http_status, message, err.code, param, _headers(err))
                except RequestValidationError as err:
                    message, param = _validation_param(err)
                    return shape.response(422, message, "invalid_request", param, {})
                except HTTPException as err:
                    return shape.response(err.status_code, str(err.detail), "http_error", None, dict(err.headers or {}))

            return answer

    return ProtocolRoute


class ProtocolErrors:
    """Rewrites problem+json answers on the protocols' paths into their shapes (ASGI middleware)."""

    def __init__(self, app: ASGI, shapes: tuple[Shape, ...] = SHAPES) -> None:
        self.app = app
        self.shapes = shapes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        shape = next((s for s in self.shapes if s.matches(scope.get("path", ""))), None)
        if scope["type"] != "http" or shape is None:
            await self.app(scope, receive, send)
            return
        held: list[Message] = []
        chunks: list[bytes] = []

        async def rewriting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message.get("headers", [])}
                if headers.get("content-type", "").startswith(PROBLEM):
                    held.append(message)
                    return
            if not held or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await self._rewritten(shape, held[0], b"".join(chunks), send)

        await self.app(scope, receive, rewriting_send)

    @staticmethod
    async def _rewritten(shape: Shape, start: Message, raw: bytes, send: Any) -> None:
        try:
            problem = json.loads(raw)
        except ValueError:
            problem = {}
        status = int(start["status"])
        message = str(problem.get("detail") or problem.get("title") or "error")
        keep = {"retry-after", "www-authenticate", "connection"}
        headers = [(k, v) for k, v in start.get("headers", []) if k.decode("latin-1").lower() in keep]
        status, body = shape.body(status, message, str(problem.get("code") or "error"), None)
        data = json.dumps(body).encode()
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
