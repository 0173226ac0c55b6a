"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) served by the server itself, so they work offline.

The assets (swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js) come from the
``fastapi-offline`` wheel, mounted at ``/static-docs``; the pages start them with a script of
their own (api/static/js/docs-*.js) rather than an inline one, so the strict script policy of
api/security.py holds on them too. FastAPI's own CDN-loading docs routes are turned off
(``docs_url=None, redoc_url=None`` in api/app.py).
"""

from __future__ import annotations

import importlib.util
from html import escape
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/static-docs"
INSTALL_HINT = "pip install fastapi-offline"


def assets_dir() -> Path | None:
    """The folder of the Swagger UI and ReDoc assets shipped by fastapi-offline (found without
    importing it), or None when the package is missing."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _page(title: str, head: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">\n'
        f"{head}</head>\n<body>\n{body}</body>\n</html>\n"
    )


def swagger_html(title: str, openapi_url: str, root: str = "") -> str:
    assets = f"{root}{ASSETS_URL}"
    return _page(
        f"{title} · Swagger UI",
        f'<link rel="stylesheet" href="{assets}/swagger-ui.css">\n',
        f'<div id="swagger-ui" data-openapi="{escape(root + openapi_url)}"></div>\n'
        f'<script src="{assets}/swagger-ui-bundle.js"></script>\n'
        f'<script src="{root}/static/js/docs-swagger.js"></script>\n',
    )


def redoc_html(title: str, openapi_url: str, root: str = "") -> str:
    return _page(
        f"{title} · ReDoc",
        f'<link rel="stylesheet" href="{root}/static/docs.css">\n',
        f'<div id="redoc" data-openapi="{escape(root + openapi_url)}"></div>\n'
        f'<script src="{root}{ASSETS_URL}/redoc.standalone.js"></script>\n'
        f'<script src="{root}/static/js/docs-redoc.js"></script>\n',
    )


def missing_html() -> str:
    return _page(
        "API docs unavailable",
        "",
        f"<p>The interactive API docs need the fastapi-offline package: <code>{INSTALL_HINT}</code>. "
        'The OpenAPI document itself is at <a href="/openapi.json">/openapi.json</a>.</p>\n',
    )


def install(app: FastAPI) -> None:
    """Add ``/docs`` and ``/redoc`` (and their assets) to ``app``."""
    folder = assets_dir()
    if folder is not None:
        app.mount(ASSETS_URL, StaticFiles(directory=folder), name="static-docs")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger(request: Request) -> HTMLResponse:
        if folder is None:
            return HTMLResponse(missing_html(), status_code=503)
        return HTMLResponse(swagger_html(app.title, openapi_url, request.scope.get("root_path", "")))

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        if folder is None:
            return HTMLResponse(missing_html(), status_code=503)
        return HTMLResponse(redoc_html(app.title, openapi_url, request.scope.get("root_path", "")))
