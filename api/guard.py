"""The request guard: a pure ASGI middleware in front of every route.

Before the application reads a single byte of a request body:

* **Authentication from the headers.** A route that needs a key (writes and admin always,
  reads when ``BLIPSEARCH_READ_ACCESS=key``: the scopes come from the route's own ``api.auth``
  dependencies) is answered 401/403 problem+json at once when the key is missing, unknown,
  revoked or lacks the scope, so a keyless client cannot make the server spool its upload.
* **A declared ``Content-Length``** over the per-request cap is answered 413 at once.

While the body is read, whatever its framing (``Content-Length`` or chunked):

* **Bytes per request** are counted as they arrive; past the cap the request is answered 413
  as soon as the next chunk arrives, and nothing more is read.
* **Bytes in flight across all requests** (what multipart parsing holds in memory or spools to
  temporary files) are counted against a global budget; past it the request is answered 503
  with ``Retry-After``, so concurrent uploads cannot fill the temporary disk.

Whatever the application had started to answer for such a request is replaced by the 413/503.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from api import problems
from api.auth import authenticate, required_scope
from blipsearch.errors import BlipsearchError, OverloadedError, PayloadTooLargeError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from api.state import AppState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _Refused(Exception):
    """Raised from ``receive`` to stop the application reading a refused body."""


class RequestGuard:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], state: AppState, api: FastAPI) -> None:
        self.app = app
        self.state = state
        self.api = api
        s = state.settings
        # the old limit (every file of a request at its limit) is kept when it is lower
        self.max_request = min(s.max_request_bytes, s.max_upload_bytes * s.max_upload_files + (1 << 20))
        self.max_inflight = s.max_inflight_body_bytes
        self.inflight = 0  # body bytes held by requests in progress (event-loop thread only)
        self._routes: list[tuple[Any, str | None]] | None = None  # (endpoint route, scope it needs)

    # -- which key a route needs ----------------------------------------------------------
    def _route_scope(self, scope: Scope) -> str | None:
        if self._routes is None:
            self._routes = [(route, required_scope(route)) for route in _leaf_routes(self.api.router.routes)]
        for route, needed in self._routes:
            if route.matches(scope)[0] == Match.FULL:
                return needed
        return None

    def _needs_key(self, scope: Scope) -> str | None:
        needed = self._route_scope(scope)
        if needed == "read" and self.state.settings.read_access == "public":
            return None
        return needed

    # -- the middleware -------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        needed = self._needs_key(scope)
        if needed is not None:
            try:
                await run_in_threadpool(authenticate, self.state.settings, headers.get("authorization"), needed)
            except BlipsearchError as err:
                await _answer(err, scope, receive, send)
                return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_request:
            too_large = PayloadTooLargeError(
                f"The request body ({length} bytes) is over the {self.max_request}-byte limit."
            )
            await _answer(too_large, scope, receive, send)
            return
        await self._guarded(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        read = 0
        refused: list[BlipsearchError] = []
        started = False

        async def guarded_receive() -> Message:
            nonlocal read
            if refused:
                raise _Refused
            message = await receive()
            if message["type"] == "http.request":
                n = len(message.get("body", b""))
                if read + n > self.max_request:
                    refused.append(
                        PayloadTooLargeError(
                            f"The request body is over the {self.max_request}-byte limit; nothing more was read."
                        )
                    )
                    raise _Refused
                if self.inflight + n > self.max_inflight:
                    refused.append(
                        OverloadedError(
                            "The server holds too many upload bytes right now "
                            f"(BLIPSEARCH_MAX_INFLIGHT_BODY_BYTES={self.max_inflight}); retry shortly.",
                            retry_after=2,
                        )
                    )
                    raise _Refused
                read += n
                self.inflight += n
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the application's answer to a refused body is replaced below
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not refused:
                raise
        finally:
            self.inflight -= read
        if refused and not started:
            await _answer(refused[0], scope, _no_body, send)


def _leaf_routes(routes: Any) -> list[Any]:
    """The endpoint routes under ``routes``, through included routers (FastAPI wraps an
    included router in an object holding ``original_router``) and mounts."""
    out: list[Any] = []
    for route in routes:
        if hasattr(route, "dependant"):
            out.append(route)
        elif hasattr(route, "original_router"):
            out += _leaf_routes(route.original_router.routes)
        elif getattr(route, "routes", None):
            out += _leaf_routes(route.routes)
    return out


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


async def _answer(err: BlipsearchError, scope: Scope, receive: Receive, send: Send) -> None:
    response = problems.for_error(err)
    response.headers["Connection"] = "close"  # the unread body makes the connection unusable
    await response(scope, receive, send)
