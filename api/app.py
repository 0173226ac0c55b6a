"""The FastAPI application factory: ``uvicorn api.app:create_app --factory``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api import problems, security
from api.metrics import Metrics
from api.routes import collections, jobs, moderation, search, system, writes
from api.state import AppState
from blipsearch import __version__
from blipsearch.config import Settings, get_settings
from blipsearch.errors import PayloadTooLargeError

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    state = AppState(settings or get_settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()  # cancel this process's jobs (committed shards stay), stop batchers

    app = FastAPI(
        title="blipsearch",
        version=__version__,
        description="Multimodal image search on BLIP embeddings.",
        lifespan=lifespan,
    )
    app.state.blip = state
    metrics = Metrics(state)
    app.state.metrics = metrics
    state.on_batch = metrics.observe_batch
    problems.install(app)
    security.install(app)
    s = state.settings
    body_limit = s.max_upload_bytes * s.max_upload_files + (1 << 20)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Refuse a declared body over every upload limit before reading it."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > body_limit:
            err = PayloadTooLargeError(f"The request body ({length} bytes) is over the {body_limit}-byte limit.")
            return problems.problem(err.http_status, type(err).__name__, str(err), err.code)
        return await call_next(request)

    app.middleware("http")(metrics.middleware)
    if s.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=s.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    for module in (system, search, collections, writes, jobs, moderation):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
