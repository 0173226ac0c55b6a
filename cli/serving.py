"""``blipsearch serve``: the HTTP API and the web page, with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import DataDirOpt, settings_for


def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes (each loads the models).")] = 1,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve the search API on HOST:PORT (OpenAPI at /docs)."""
    import uvicorn

    settings = settings_for(data_dir)
    if workers == 1:
        from api.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
        return
    # Several worker processes each build the app from an import string, so they read their
    # settings from the environment: hand this process's (flags included) down that way.
    import os

    os.environ.update(settings_env(settings))
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers, log_level="info")


def settings_env(settings: object) -> dict[str, str]:
    """The settings that flags can set, as the ``BLIPSEARCH_*`` variables worker processes read."""
    data_dir = getattr(settings, "data_dir", None)
    return {"BLIPSEARCH_DATA_DIR": str(data_dir)} if data_dir is not None else {}
