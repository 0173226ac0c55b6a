"""Errors as RFC 9457 problem details (``application/problem+json``), never a bare 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from blipsearch.errors import BlipsearchError, OverloadedError, UnauthorizedError, disk_full_error, is_disk_full

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, code: str, **extra: object) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def for_error(err: BlipsearchError, detail: str | None = None) -> JSONResponse:
    """The problem response of a domain error (with Retry-After / WWW-Authenticate); ``detail``
    replaces the error's own message (e.g. with server paths hidden)."""
    response = problem(err.http_status, type(err).__name__, detail or str(err), err.code)
    if isinstance(err, OverloadedError):
        response.headers["Retry-After"] = str(err.retry_after)
    elif isinstance(err, UnauthorizedError):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _shown(request: Request, message: str) -> str:
    """``message`` without absolute server paths (model folders, files), as api/paths.py shows them."""
    from api.paths import PathView

    state = getattr(request.app.state, "blip", None)
    if state is None:
        return PathView.hide(message)
    return PathView(state.settings).text(message) or message


def install(app: FastAPI) -> None:
    @app.exception_handler(BlipsearchError)
    async def _domain(request: Request, err: BlipsearchError) -> JSONResponse:
        return for_error(err, _shown(request, str(err)))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": _shown(request, str(e.get("msg", "")))} for e in err.errors()]
        return problem(422, "Invalid request", "The request failed validation.", "invalid_request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return problem(err.status_code, "HTTP error", _shown(request, str(err.detail)), "http_error")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        if is_disk_full(err):  # a full disk or database is the storage's problem, not a 500
            log.warning("storage full: %s", err)
            return for_error(disk_full_error(err))
        log.exception("unhandled error")
        return problem(500, "Internal error", f"{type(err).__name__}; see the server log.", "internal")
