"""``blipsearch mcp``: the MCP server for AI agents (api/mcp_server.py), over stdio or streamable HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from blipsearch.errors import ConfigError, InvalidInputError
from cli.common import DataDirOpt, handle_errors, settings_for

TRANSPORTS = ("stdio", "http")


@handle_errors
def mcp(
    collection: Annotated[
        list[str] | None,
        typer.Option("--collection", "-c", help="Serve only this collection (repeatable); default: all."),
    ] = None,
    transport: Annotated[
        str, typer.Option("--transport", help="stdio (an agent starts this command) or http (streamable HTTP at /mcp).")
    ] = "stdio",
    host: Annotated[str, typer.Option("--host", help="Interface to bind (--transport http).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port (--transport http).")] = 8765,
    write_key: Annotated[
        str | None,
        typer.Option(
            "--write-key",
            envvar="BLIPSEARCH_MCP_WRITE_KEY",
            help="An API key of scope write: adds the add_image tool. Without it the server is read-only.",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve search to AI agents over the Model Context Protocol (tools and thumbnail resources)."""
    if transport not in TRANSPORTS:
        raise InvalidInputError(f"--transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}.")
    if transport == "stdio" and (host != "127.0.0.1" or port != 8765):
        raise InvalidInputError("--host and --port apply to --transport http only.")
    settings = settings_for(data_dir)
    if not settings.mcp_api:
        raise ConfigError("The MCP server is switched off (BLIPSEARCH_MCP_API=false).")
    from api.mcp_server import build_server, http_app

    server = build_server(settings, collection or None, write_key)
    try:
        if transport == "stdio":
            server.run("stdio")
        else:
            import uvicorn

            uvicorn.run(http_app(server, settings), host=host, port=port, log_level="warning")
    finally:
        server.blipsearch_tools.close()
