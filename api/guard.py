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
* **A share per client.** One client (its API key, else its address) holds at most
  ``BLIPSEARCH_MAX_INFLIGHT_BODY_BYTES_PER_CLIENT`` of that budget (default a quarter), and the
  last eighth of the budget is kept for small bodies (one image: a search), so a few clients
  uploading large bodies cannot starve everyone's searches.
* **A minimum receive rate.** After ``BLIPSEARCH_BODY_RATE_GRACE_S`` a body must have arrived
  at ``BLIPSEARCH_MIN_BODY_RATE`` bytes/s on average; a slower or stalled one is answered 408 and
  its bytes leave the budget, so slow clients cannot hold it.

Whatever the application had started to answer for such a request is replaced by the 413/503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from api import problems
from api.auth import authenticate, required_scope
from blipsearch.errors import BlipsearchError, OverloadedError, PayloadTooLargeError, RequestTimeoutError

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
        # by default a quarter of the budget, and never less than one whole request
        self.per_client = s.max_inflight_body_bytes_per_client or max(self.max_inflight // 4, self.max_request)
        self.reserve = self.max_inflight // 8  # kept for small bodies
        self.small_body = s.max_upload_bytes + (64 << 10)  # one image and a few form fields
        self.min_rate = s.min_body_rate
        self.grace = s.body_rate_grace_s
        self.inflight = 0  # body bytes held by requests in progress (event-loop thread only)
        self.by_client: dict[str, int] = {}  # the same, per client
        self.timed_out = 0  # bodies cut off for arriving too slowly
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
        client = "addr:" + str((scope.get("client") or ("?",))[0])
        if needed is not None:
            try:
                info = await run_in_threadpool(authenticate, self.state.settings, headers.get("authorization"), needed)
            except BlipsearchError as err:
                await _answer(err, scope, receive, send)
                return
            client = "key:" + info.id
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_request:
            too_large = PayloadTooLargeError(
                f"The request body ({length} bytes) is over the {self.max_request}-byte limit."
            )
            await _answer(too_large, scope, receive, send)
            return
        await self._guarded(scope, receive, send, client)

    def _over_budget(self, client: str, read: int, n: int) -> BlipsearchError | None:
        """Why ``n`` more body bytes of a request that has read ``read`` may not be held now."""
        if read + n > self.max_request:
            return PayloadTooLargeError(
                f"The request body is over the {self.max_request}-byte limit; nothing more was read."
            )
        if self.by_client.get(client, 0) + n > self.per_client:
            return OverloadedError(
                "This client holds too many request-body bytes right now "
                f"(BLIPSEARCH_MAX_INFLIGHT_BODY_BYTES_PER_CLIENT={self.per_client}); retry shortly.",
                retry_after=2,
            )
        limit = self.max_inflight if read + n <= self.small_body else self.max_inflight - self.reserve
        if self.inflight + n > limit:
            return OverloadedError(
                "The server holds too many upload bytes right now "
                f"(BLIPSEARCH_MAX_INFLIGHT_BODY_BYTES={self.max_inflight}); retry shortly.",
                retry_after=2,
            )
        return None

    async def _receive_in_time(self, receive: Receive, started: float, read: int) -> Message:
        """The next message, or RequestTimeoutError once the body's average rate would fall
        below the minimum (a stalled body is cut off at that moment, not after it resumes)."""
        if self.min_rate <= 0:
            return await receive()
        deadline = started + max(self.grace, read / self.min_rate)
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            return await asyncio.wait_for(receive(), left)
        except TimeoutError:
            self.timed_out += 1
            raise RequestTimeoutError(
                f"The request body arrived slower than {self.min_rate} bytes/s (BLIPSEARCH_MIN_BODY_RATE, after "
                f"BLIPSEARCH_BODY_RATE_GRACE_S={self.grace:g}); {read} bytes were read and dropped."
            ) from None

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, client: str) -> None:
        read = 0
        refused: list[BlipsearchError] = []
        started = False
        began = time.monotonic()
        body_done = False

        async def guarded_receive() -> Message:
            nonlocal read, body_done
            if refused:
                raise _Refused
            if body_done:  # after the body: only a disconnect can come; no rate applies
                return await receive()
            try:
                message = await self._receive_in_time(receive, began, read)
            except RequestTimeoutError as err:
                refused.append(err)
                raise _Refused from None
            if message["type"] == "http.request":
                n = len(message.get("body", b""))
                why = self._over_budget(client, read, n)
                if why is not None:
                    refused.append(why)
                    raise _Refused
                read += n
                self.inflight += n
                self.by_client[client] = self.by_client.get(client, 0) + n
                body_done = not message.get("more_body", False)
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
            left = self.by_client.get(client, 0) - read
            if left > 0:
                self.by_client[client] = left
            else:
                self.by_client.pop(client, None)
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
