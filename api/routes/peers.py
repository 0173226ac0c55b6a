"""The peers' protocols mounted on the API, each unless its setting switches it off
(docs/protocols.md): OpenAI embeddings and moderations, Immich ML, Weaviate multi2vec-clip."""

from __future__ import annotations

from fastapi import FastAPI

from api.protocol_errors import ProtocolErrors
from api.routes import immich, openai_compat, weaviate
from blipsearch.config import Settings


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the switched-on protocols and the middleware that answers their errors in their shapes
    (call it after the request guard is added, so the guard's answers are rewritten too)."""
    app.add_middleware(ProtocolErrors)
    for enabled, protocol in (
        (settings.openai_api, openai_compat),
        (settings.immich_api, immich),
        (settings.weaviate_api, weaviate),
    ):
        if enabled:
            app.include_router(protocol.router)
