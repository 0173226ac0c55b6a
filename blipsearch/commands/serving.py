"""``blipsearch serve``: the HTTP API (and, later, the web page) with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from blipsearch.cli_common import DataDirOpt


def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes (each loads the models).")] = 1,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve the search API on HOST:PORT (OpenAPI at /docs)."""
    import os

    import uvicorn

    if data_dir is not None:
        os.environ["BLIPSEARCH_DATA_DIR"] = str(data_dir)  # workers build their settings from the environment
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers, log_level="info")
