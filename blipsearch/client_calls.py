"""The requests of the blipsearch HTTP API as values (``Call``: method, path, body, how the JSON
answer becomes a typed result), written once for ``Client`` and ``AsyncClient``
(blipsearch/client.py), with what both share: the retry wait after a 503 / 429 and the mapping of
an error answer to ``APIError``. Like the clients, it imports nothing of blipsearch but the
result types (blipsearch/client_types.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from blipsearch.client_types import (
    APIError,
    CollectionInfo,
    Embeddings,
    Hit,
    Job,
    ModerationCheck,
    SearchResult,
    Upload,
    build,
)

T = TypeVar("T")
Image = str | Path | bytes | tuple[str, bytes]  # a path, raw bytes, or (file name, bytes)
RETRYABLE = (429, 503)


def httpx_module() -> Any:
    try:
        import httpx
    except ImportError:  # pragma: no cover - the extra is missing
        raise ImportError("blipsearch.client needs httpx: pip install 'blipsearch[client]'") from None
    return httpx


@dataclass
class Call(Generic[T]):
    """One request and how its JSON answer becomes a result."""

    method: str
    path: str
    parse: Any  # Callable[[Any], T]
    json: Any = None
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    params: dict[str, Any] | None = None


def _file(image: Image, name: str = "file") -> tuple[str, tuple[str, bytes, str]]:
    if isinstance(image, tuple):
        return name, (image[0], image[1], "application/octet-stream")
    if isinstance(image, bytes):
        return name, ("image", image, "application/octet-stream")
    path = Path(image)
    return name, (path.name, path.read_bytes(), "application/octet-stream")


def _search(data: Any) -> SearchResult:
    res = build(SearchResult, data)
    res.results = [build(Hit, h) for h in data.get("results", [])]
    return res


def _form(values: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in values.items():
        if v is None:
            continue
        out[k] = json.dumps(v) if isinstance(v, dict) else str(v).lower() if isinstance(v, bool) else str(v)
    return out


class Calls:
    """The requests, written once for both clients."""

    def search_text(self, query: str, collection: str, k: int = 10, **options: Any) -> Call[SearchResult]:
        """Text search; ``options``: mode (vector | keyword | hybrid), rerank, rerank_k, rerank_model,
        fusion, filters, min_score, sort, nprobe, ef_search, refine_k (as POST /v1/search/text)."""
        body = {"query": query, "collection": collection, "k": k, **{a: b for a, b in options.items() if b is not None}}
        return Call("POST", "/v1/search/text", _search, json=body)

    def search_image(self, image: Image, collection: str, k: int = 10, **options: Any) -> Call[SearchResult]:
        """Image search; ``options``: target (images | texts | captions), rerank, rerank_k, filters, ..."""
        data = _form({"collection": collection, "k": k, **options})
        return Call("POST", "/v1/search/image", _search, data=data, files=[_file(image)])

    def similar(self, collection: str, id: int, k: int = 10, filters: dict | None = None) -> Call[SearchResult]:
        body = {"collection": collection, "id": id, "k": k, **({"filters": filters} if filters else {})}
        return Call("POST", "/v1/search/similar", _search, json=body)

    def embed_texts(
        self, texts: Sequence[str], *, collection: str | None = None, model: str | None = None
    ) -> Call[Embeddings]:
        body = {"texts": list(texts), **({"collection": collection} if collection else {}), **_opt(model=model)}
        return Call("POST", "/v1/embed", lambda d: build(Embeddings, d), json=body)

    def embed_images(
        self, images: Sequence[Image], *, collection: str | None = None, model: str | None = None
    ) -> Call[Embeddings]:
        files = [_file(im, "files") for im in images]
        return Call(
            "POST", "/v1/embed", lambda d: build(Embeddings, d), data=_form(_opt(collection=collection, model=model)),
            files=files,
        )  # fmt: skip

    def collections(self) -> Call[list[CollectionInfo]]:
        return Call("GET", "/v1/collections", lambda d: [build(CollectionInfo, c) for c in d["collections"]])

    def collection(self, name: str) -> Call[CollectionInfo]:
        return Call("GET", f"/v1/collections/{_seg(name)}", lambda d: build(CollectionInfo, d))

    def create_collection(self, name: str, model: str | None = None) -> Call[CollectionInfo]:
        return Call(
            "POST", "/v1/collections", lambda d: build(CollectionInfo, d), json={"name": name, **_opt(model=model)}
        )

    def upload(self, collection: str, images: Sequence[Image]) -> Call[Upload]:
        files = [_file(im, "files") for im in images]
        return Call("POST", f"/v1/collections/{_seg(collection)}/images", lambda d: build(Upload, d), files=files)

    def record(self, collection: str, id: int) -> Call[dict[str, Any]]:
        return Call("GET", f"/v1/collections/{_seg(collection)}/images/{int(id)}", lambda d: d)

    def start_index_job(self, collection: str, paths: Sequence[str]) -> Call[Job]:
        body = {"collection": collection, "paths": [str(p) for p in paths]}
        return Call("POST", "/v1/jobs/index", lambda d: build(Job, d), json=body)

    def job(self, job_id: str) -> Call[Job]:
        return Call("GET", f"/v1/jobs/{_seg(job_id)}", lambda d: build(Job, d))

    def jobs(self, collection: str | None = None, state: str | None = None, limit: int = 50) -> Call[list[Job]]:
        params = {"limit": limit, **_opt(collection=collection, state=state)}
        return Call("GET", "/v1/jobs", lambda d: [build(Job, j) for j in d["jobs"]], params=params)

    def cancel_job(self, job_id: str) -> Call[Job]:
        return Call("POST", f"/v1/jobs/{_seg(job_id)}/cancel", lambda d: build(Job, d))

    def moderate(self, image: Image, policy: str, text: str | None = None) -> Call[ModerationCheck]:
        data = _form({"policy": policy, "text": text})
        return Call(
            "POST", "/v1/moderation/check", lambda d: build(ModerationCheck, d), data=data, files=[_file(image)]
        )

    def moderation_queue(self, collection: str, limit: int = 100) -> Call[dict[str, Any]]:
        return Call("GET", "/v1/moderation/queue", lambda d: d, params={"collection": collection, "limit": limit})

    def decide(self, collection: str, id: int, decision: str, note: str | None = None) -> Call[dict[str, Any]]:
        body = {"collection": collection, "id": id, "decision": decision, **_opt(note=note)}
        return Call("POST", "/v1/moderation/decisions", lambda d: d, json=body)


def _opt(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _seg(value: str) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")


def api_error(response: Any) -> APIError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return APIError(response.status_code, str(body.get("code", "error")), str(body.get("detail", body)), body)
    return APIError(response.status_code, "error", response.text[:500], body)


def retry_wait(response: Any, max_wait: float) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", "1")), 0.0), max_wait)
    except ValueError:
        return min(1.0, max_wait)


class ClientBase:
    """What both clients hold: the base URL, the key's header, the retry settings, the calls."""

    def __init__(self, url: str, key: str | None, timeout: float, retries: int, max_wait: float) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout, self.retries, self.max_wait = timeout, retries, max_wait
        self.calls = Calls()

    def _kwargs(self, call: Call[Any]) -> dict[str, Any]:
        kw: dict[str, Any] = {"headers": self.headers}
        for name in ("json", "data", "files", "params"):
            if getattr(call, name) is not None:
                kw[name] = getattr(call, name)
        return kw
