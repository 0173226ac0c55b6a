"""The FastAPI application factory: ``uvicorn api.app:create_app --factory``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api import docs_pages, problems, security
from api.guard import RequestGuard
from api.metrics import Metrics
from api.routes import (
    browse,
    clip_retrieval,
    collections,
    duplicates,
    embed,
    info,
    jobs,
    moderation,
    ocr,
    peers,
    search,
    system,
    writes,
)
from api.state import AppState
from blipsearch import __version__
from blipsearch.config import Settings, get_settings
from search.engine import IndexLoader

STATIC = Path(__file__).parent / "static"
WARM_ENV = "BLIPSEARCH_SERVE_WARM"


def create_app(
    settings: Settings | None = None, *, index_loader: IndexLoader | None = None, warm: bool | None = None
) -> FastAPI:
    """The API. ``index_loader``: collections' indexes come from it (sharded serving,
    api/ray_serve.py) instead of their saved FAISS indexes. ``warm`` (default: the
    ``BLIPSEARCH_SERVE_WARM`` variable ``blipsearch serve`` sets): load the collections' engines
    and models at start-up (``AppState.warm``), so the server listens, and ``/readyz``
    answers, once a first search is fast."""
    state = AppState(settings or get_settings(), index_loader)
    if warm is None:
        warm = os.environ.get(WARM_ENV) == "1"

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if warm:
            await asyncio.to_thread(state.warm)
        yield
        state.close()  # cancel this process's jobs (committed shards stay), stop batchers

    app = FastAPI(
        title="blipsearch",
        version=__version__,
        description="Multimodal image search on BLIP embeddings.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's own docs load from a CDN: api/docs_pages.py serves them offline
        redoc_url=None,
    )
    app.state.blip = state
    metrics = Metrics(state)
    app.state.metrics = metrics
    state.on_batch = metrics.observe_batch
    problems.install(app)
    security.install(app)
    s = state.settings
    # Before any route reads a body: authenticate from the headers, cap the bytes read (api/guard.py).
    # Added first, so metrics and CORS (added after, so outside it) still see its answers.
    app.add_middleware(RequestGuard, state=state, api=app)
    peers.install(app, s)  # OpenAI, Immich, Weaviate (docs/protocols.md); errors in their own shapes
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
    for module in (system, info, search, embed, ocr, collections, browse, writes, jobs, moderation, duplicates):
        app.include_router(module.router)
    if s.clip_retrieval_api:  # clip-retrieval's back-end protocol
        app.include_router(clip_retrieval.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    docs_pages.install(app)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
