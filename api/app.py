"""The FastAPI application factory: ``uvicorn api.app:create_app --factory``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api import problems
from api.routes import collections, search, system
from api.state import AppState
from blipsearch import __version__
from blipsearch.config import Settings, get_settings

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(title="blipsearch", version=__version__, description="Multimodal image search on BLIP embeddings.")
    app.state.blip = AppState(settings or get_settings())
    problems.install(app)
    app.include_router(system.router)
    app.include_router(search.router)
    app.include_router(collections.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
