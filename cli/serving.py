"""``blipsearch serve``: the HTTP API and the web page, with uvicorn, or sharded on Ray Serve."""

from __future__ import annotations

from typing import Annotated

import typer

from blipsearch.errors import InvalidInputError
from cli.common import DataDirOpt, handle_errors, settings_for

RUNNERS = ("local", "ray")


@handle_errors
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes (each loads the models).")] = 1,
    runner: Annotated[
        str,
        typer.Option(
            "--runner",
            help="local: one uvicorn server. ray: Ray Serve, the index split over --shards shard deployments "
            "behind a router (the same HTTP API).",
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray cluster to deploy on (e.g. auto, or HOST:6379); default: a new local Ray."),
    ] = None,
    shards: Annotated[int, typer.Option("--shards", help="Index shards (--runner ray).")] = 1,
    replicas: Annotated[int, typer.Option("--replicas", help="Replicas of each shard (--runner ray).")] = 1,
    router_replicas: Annotated[
        int, typer.Option("--router-replicas", help="Replicas of the router, which runs the models (--runner ray).")
    ] = 1,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve the search API on HOST:PORT (OpenAPI at /docs)."""
    if runner not in RUNNERS:
        raise InvalidInputError(f"Unknown --runner {runner!r}: use local or ray.")
    if runner == "local" and (address is not None or shards != 1 or replicas != 1 or router_replicas != 1):
        raise InvalidInputError("--address, --shards, --replicas and --router-replicas need --runner ray.")
    if runner == "ray" and workers != 1:
        raise InvalidInputError("--workers is for --runner local; on Ray use --router-replicas.")
    settings = settings_for(data_dir)
    if runner == "ray":
        from api.ray_serve import run

        run(
            settings,
            shards=shards,
            replicas=replicas,
            router_replicas=router_replicas,
            host=host,
            port=port,
            address=address,
        )
        return
    import os

    import uvicorn

    # Load the models before listening (each worker): /readyz then means a first search is fast.
    os.environ.setdefault("BLIPSEARCH_SERVE_WARM", "1")
    if workers == 1:
        from api.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
        return
    # Several worker processes each build the app from an import string, so they read their
    # settings from the environment: hand this process's (flags included) down that way.
    os.environ.update(settings_env(settings))
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers, log_level="info")


def settings_env(settings: object) -> dict[str, str]:
    """The settings that flags can set, as the ``BLIPSEARCH_*`` variables worker processes read."""
    data_dir = getattr(settings, "data_dir", None)
    return {"BLIPSEARCH_DATA_DIR": str(data_dir)} if data_dir is not None else {}
