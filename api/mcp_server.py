"""An MCP server (the official MCP Python SDK, ``pip install 'blipsearch[mcp]'``) so AI agents
search blipsearch: ``blipsearch mcp`` over stdio, or streamable HTTP with ``--transport http``.

Tools: ``search_images`` (text query: vector, keyword or hybrid; filters; k; ITM re-rank),
``search_by_image`` (base64 bytes, or a server path inside BLIPSEARCH_IMPORT_ROOTS),
``similar``, ``describe`` (a record: caption, OCR text when present, metadata) and
``list_collections``; resources ``blipsearch://{collection}/{id}/thumbnail`` (JPEG).
Read-only unless started with a key of scope write (``--write-key``), which adds
``add_image``. ``--collection`` (repeatable) limits what the server exposes. Every argument is
bounded as the HTTP API bounds it; a bad one is a tool error naming it, never a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from api.protocols import inline_image_bytes
from api.state import AppState
from blipsearch.config import Settings
from blipsearch.errors import BlipsearchError, ForbiddenError, InvalidInputError, RecordNotFoundError
from search.engine import MAX_K, QueryOptions, SearchResult
from search.filters import Filters

Name = Annotated[str, Field(min_length=1, max_length=64, description="A collection name (list_collections).")]
K = Annotated[int, Field(ge=1, le=MAX_K, description="How many results.")]
RecordId = Annotated[int, Field(ge=0, le=2**62, description="A record id from a search result.")]
THUMB = "blipsearch://{collection}/{id}/thumbnail"
RERANK_K = 64  # ITC candidates an ITM re-rank scores (as the HTTP API's default rerank_k)


def _mcp() -> Any:
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ResourceError, ToolError
    except ImportError:  # pragma: no cover - the extra is missing
        raise ImportError("blipsearch mcp needs the MCP SDK: pip install 'blipsearch[mcp]'") from None
    return MCPServer, ToolError, ResourceError


class Tools:
    """What the tools do, on the API's own state (engines, models, limits)."""

    def __init__(self, settings: Settings, collections: list[str] | None, write: bool) -> None:
        self.state = AppState(settings)
        self.settings = settings
        self.only = collections or None
        self.write = write

    def close(self) -> None:
        self.state.close()

    def _allowed(self, name: str) -> str:
        if self.only is not None and name not in self.only:
            raise ForbiddenError(f"Collection {name!r} is not served here: use one of {self.only}.")
        return name

    def _hits(self, name: str, res: SearchResult) -> dict[str, Any]:
        from api.paths import PathView

        view = PathView(self.settings)
        hits = []
        for h in res.hits:
            d = {k: v for k, v in h.to_dict().items() if v is not None}
            d["uri"] = view.show(d.get("uri"))
            d["thumbnail"] = THUMB.format(collection=name, id=h.id)
            hits.append(d)
        return {"collection": name, "results": hits}

    def list_collections(self) -> dict[str, Any]:
        from storage.collection import Collection
        from storage.layout import list_names

        names = [n for n in list_names(self.settings.data_dir) if self.only is None or n in self.only]
        return {"collections": [Collection.open(self.settings.data_dir, n).manifest.summary() for n in names]}

    def search_images(
        self, query: str, collection: str, k: int, mode: str, rerank: bool, filters: dict[str, Any] | None
    ) -> dict[str, Any]:
        engine = self.state.engine(self._allowed(collection))
        options = QueryOptions(filters=Filters.model_validate(filters) if filters else None)
        depth = max(k, RERANK_K) if rerank else 0
        if depth > self.settings.public_rerank_depth and not self.write:
            raise InvalidInputError(
                f"Re-ranking {depth} candidates is over BLIPSEARCH_PUBLIC_RERANK_DEPTH="
                f"{self.settings.public_rerank_depth}; lower k."
            )
        with self.state.rerank_budget.take(depth):  # 503-style refusal while too much re-ranking is in flight
            res = engine.search_text(query, k, rerank=rerank, rerank_k=RERANK_K, mode=mode, options=options)
        return self._hits(collection, res)

    def _bytes(self, image_base64: str | None, path: str | None) -> bytes:
        if (image_base64 is None) == (path is None):
            raise InvalidInputError("Give exactly one of image_base64 or path.")
        if path is not None:
            from api.jobs import confine
            from media.decode import read_file

            (resolved,) = confine([path], self.settings.import_roots)  # no object prefixes: local files only
            if not isinstance(resolved, Path) or not resolved.is_file():
                raise InvalidInputError("path must be an image file.")
            return read_file(resolved, self.settings.max_upload_bytes).data
        return inline_image_bytes(image_base64 or "", self.settings.max_upload_bytes, "image_base64")

    def _image(self, data: bytes) -> Any:
        from api.protocols import decode_all

        return decode_all(self.state, [data])[0]

    def search_by_image(self, collection: str, k: int, image_base64: str | None, path: str | None) -> dict[str, Any]:
        engine = self.state.engine(self._allowed(collection))
        return self._hits(collection, engine.search_image(self._image(self._bytes(image_base64, path)), k))

    def similar(self, collection: str, id: int, k: int) -> dict[str, Any]:
        engine = self.state.engine(self._allowed(collection))
        return self._hits(collection, engine.search_similar(id, k))

    def _record(self, collection: str, id: int) -> tuple[Any, dict[str, Any]]:
        from storage.collection import Collection

        coll = Collection.open(self.settings.data_dir, self._allowed(collection))
        rec = coll.get_records([id]).get(id)
        if rec is None:
            raise RecordNotFoundError(f"Collection {collection!r} has no record {id}.")
        return coll, rec

    def describe(self, collection: str, id: int) -> dict[str, Any]:
        import json

        from api.paths import PathView

        _, rec = self._record(collection, id)
        keep = ("id", "caption", "caption_model", "text", "ocr_text", "external_id", "width", "height", "format")
        out = {k: rec[k] for k in keep if rec.get(k) is not None}
        out["uri"] = PathView(self.settings).show(rec.get("uri"))
        out["added_at"] = str(rec.get("added_at"))
        out["metadata"] = json.loads(rec["metadata"]) if rec.get("metadata") else {}
        out["thumbnail"] = THUMB.format(collection=collection, id=id)
        return out

    def thumbnail(self, collection: str, id: int) -> bytes:
        from api.routes.collections import thumbnail_bytes

        coll, rec = self._record(collection, id)
        return thumbnail_bytes(self.settings, coll, rec)

    def add_image(self, collection: str, image_base64: str, filename: str | None) -> dict[str, Any]:
        from indexer.uploads import Blob, index_blobs
        from storage.collection import Collection

        if not self.write:  # never registered without a write key; checked again here
            raise ForbiddenError("This MCP server is read-only: start it with --write-key.")
        coll = Collection.open(self.settings.data_dir, self._allowed(collection))
        data = self._bytes(image_base64, None)
        from api.decoding import check_request_pixels
        from api.uploads import sniff_and_decode

        check_request_pixels(
            [data], self.settings.max_request_pixels, self.settings.max_image_pixels
        )  # what is not an image is refused here
        fmt = (
            sniff_and_decode(
                data, filename, None, self.settings.max_image_pixels, None, self.settings.decode_timeout_s
            ).format
            or ""
        )
        out = index_blobs(self.settings, coll, self.state.embedder(coll.manifest.model_id), [Blob(filename, data, fmt)])
        return {
            "collection": collection,
            "added": [{"filename": f, "id": i} for f, i in out.added],
            "duplicates": [f for f, _ in out.duplicates],
            "failures": [{"filename": f, "reason": r} for f, r in out.failures],
        }


def build_server(settings: Settings, collections: list[str] | None = None, write_key: str | None = None) -> Any:
    """The MCP server (an ``MCPServer``); ``write_key`` (scope write, checked now) adds ``add_image``."""
    MCPServer, ToolError, ResourceError = _mcp()
    write = False
    if write_key is not None:
        from api.auth import check_key

        check_key(settings, write_key, "write")
        write = True
    tools = Tools(settings, collections, write)

    def run(fn: Any, *args: Any) -> Any:
        from api.paths import PathView

        try:
            return fn(*args)
        except BlipsearchError as err:  # a clear tool error, server paths hidden
            raise ToolError(PathView(settings).text(str(err)) or type(err).__name__) from None
        except ValueError as err:  # pydantic's (filters): the message names the field
            raise ToolError(str(err)) from None

    server = MCPServer(
        "blipsearch",
        instructions="Multimodal image search: find images by text or by image, look records up, see thumbnails.",
    )

    @server.tool(description="Collections served here, with their model, size and kind.")
    def list_collections() -> dict[str, Any]:
        return run(tools.list_collections)

    @server.tool(description="Search a collection's images by a text query (optionally ITM re-ranked).")
    def search_images(
        query: Annotated[str, Field(min_length=1, max_length=1000)],
        collection: Name,
        k: K = 10,
        mode: Literal["vector", "keyword", "hybrid"] = "vector",
        rerank: bool = False,
        filters: Annotated[dict[str, Any] | None, Field(description="As POST /v1/search/text's filters.")] = None,
    ) -> dict[str, Any]:
        return run(tools.search_images, query, collection, k, mode, rerank, filters)

    @server.tool(description="Search by an image: its bytes as base64, or a path inside the server's import roots.")
    def search_by_image(
        collection: Name,
        image_base64: Annotated[str | None, Field(max_length=64 << 20)] = None,
        path: Annotated[str | None, Field(max_length=4096)] = None,
        k: K = 10,
    ) -> dict[str, Any]:
        return run(tools.search_by_image, collection, k, image_base64, path)

    @server.tool(description="Records most like a stored record (by its own embedding).")
    def similar(collection: Name, id: RecordId, k: K = 10) -> dict[str, Any]:
        return run(tools.similar, collection, id, k)

    @server.tool(description="A record: caption, OCR text when present, metadata, size, thumbnail resource.")
    def describe(collection: Name, id: RecordId) -> dict[str, Any]:
        return run(tools.describe, collection, id)

    @server.resource(THUMB, mime_type="image/jpeg", description="A record's JPEG thumbnail.")
    def thumbnail(collection: str, id: str) -> bytes:
        try:
            return tools.thumbnail(collection, int(id))
        except (BlipsearchError, ValueError) as err:
            raise ResourceError(f"No thumbnail for {collection}/{id}: {err}") from None

    if write:

        @server.tool(description="Add an image (base64 bytes) to a collection; answers its new id.")
        def add_image(
            collection: Name,
            image_base64: Annotated[str, Field(min_length=1, max_length=64 << 20)],
            filename: Annotated[str | None, Field(max_length=255)] = None,
        ) -> dict[str, Any]:
            return run(tools.add_image, collection, image_base64, filename)

    server.blipsearch_tools = tools  # closed by the caller (cli/mcp.py)
    return server


def http_app(server: Any, settings: Settings) -> Any:
    """The streamable-HTTP ASGI app at ``/mcp``, behind the API's read-access rule (a bearer key
    when BLIPSEARCH_READ_ACCESS=key) and its body cap."""
    from api.protocols import json_body_cap

    app = server.streamable_http_app(max_request_body_size=json_body_cap(settings))
    if settings.read_access == "public":
        return app

    async def keyed(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            from starlette.concurrency import run_in_threadpool

            from api import problems
            from api.auth import authenticate

            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            try:
                await run_in_threadpool(authenticate, settings, headers.get("authorization"), "read")
            except BlipsearchError as err:
                await problems.for_error(err)(scope, receive, send)
                return
        await app(scope, receive, send)

    return keyed
