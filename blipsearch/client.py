"""A Python client of the blipsearch HTTP API: ``Client(url, key)`` and its async twin
``AsyncClient``, on httpx (``pip install 'blipsearch[client]'``).

    from blipsearch.client import Client

    with Client("http://127.0.0.1:8000", key="bs_...") as bs:
        hits = bs.search_text("a red bicycle", collection="photos", k=5, rerank=True)
        for hit in hits.results:
            print(hit.id, hit.score, hit.uri)

Every call answers typed results (dataclasses; ``raw`` keeps the whole JSON answer) or raises
``APIError`` (status, code, detail). A 503 (or 429) is retried after its ``Retry-After``
(at most ``max_wait`` seconds each, ``retries`` times). The requests themselves are written once
for both clients (blipsearch/client_calls.py). It imports nothing of blipsearch but those and its
own result types (blipsearch/client_types.py): it runs wherever httpx does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from blipsearch.client_calls import RETRYABLE, Call, ClientBase, Image, T, api_error, httpx_module, retry_wait
from blipsearch.client_types import (
    APIError,
    CollectionInfo,
    Embeddings,
    Hit,
    Job,
    ModerationCheck,
    SearchResult,
    Upload,
)

__all__ = [
    "APIError",
    "AsyncClient",
    "Call",
    "Client",
    "CollectionInfo",
    "Embeddings",
    "Hit",
    "Job",
    "ModerationCheck",
    "SearchResult",
    "Upload",
]


class Client(ClientBase):
    """The blipsearch API, synchronously. ``key``: an API key (reads need one only when the
    server runs with BLIPSEARCH_READ_ACCESS=key)."""

    def __init__(
        self, url: str, key: str | None = None, *, timeout: float = 60.0, retries: int = 3, max_wait: float = 30.0
    ) -> None:
        super().__init__(url, key, timeout, retries, max_wait)
        self._http = httpx_module().Client(base_url=self.url, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call[T]) -> T:
        for attempt in range(self.retries + 1):
            response = self._http.request(call.method, call.path, **self._kwargs(call))
            if response.status_code in RETRYABLE and attempt < self.retries:
                time.sleep(retry_wait(response, self.max_wait))
                continue
            if response.status_code >= 400:
                raise api_error(response)
            return call.parse(response.json()) if response.content else call.parse(None)
        raise AssertionError("unreachable")

    def search_text(self, query: str, collection: str, k: int = 10, **options: Any) -> SearchResult:
        return self.send(self.calls.search_text(query, collection, k, **options))

    def search_image(self, image: Image, collection: str, k: int = 10, **options: Any) -> SearchResult:
        return self.send(self.calls.search_image(image, collection, k, **options))

    def similar(self, collection: str, id: int, k: int = 10, filters: dict | None = None) -> SearchResult:
        return self.send(self.calls.similar(collection, id, k, filters))

    def embed_texts(self, texts: Sequence[str], **kw: Any) -> Embeddings:
        return self.send(self.calls.embed_texts(texts, **kw))

    def embed_images(self, images: Sequence[Image], **kw: Any) -> Embeddings:
        return self.send(self.calls.embed_images(images, **kw))

    def collections(self) -> list[CollectionInfo]:
        return self.send(self.calls.collections())

    def collection(self, name: str) -> CollectionInfo:
        return self.send(self.calls.collection(name))

    def create_collection(self, name: str, model: str | None = None) -> CollectionInfo:
        return self.send(self.calls.create_collection(name, model))

    def upload(self, collection: str, images: Sequence[Image]) -> Upload:
        return self.send(self.calls.upload(collection, images))

    def record(self, collection: str, id: int) -> dict[str, Any]:
        return self.send(self.calls.record(collection, id))

    def start_index_job(self, collection: str, paths: Sequence[str]) -> Job:
        return self.send(self.calls.start_index_job(collection, paths))

    def job(self, job_id: str) -> Job:
        return self.send(self.calls.job(job_id))

    def jobs(self, collection: str | None = None, state: str | None = None, limit: int = 50) -> list[Job]:
        return self.send(self.calls.jobs(collection, state, limit))

    def cancel_job(self, job_id: str) -> Job:
        return self.send(self.calls.cancel_job(job_id))

    def wait_job(self, job_id: str, timeout: float = 600.0, poll: float = 0.5) -> Job:
        """Poll until the job ends (succeeded, failed, cancelled, interrupted) or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not (job := self.job(job_id)).done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout} s")
            time.sleep(poll)
        return job

    def moderate(self, image: Image, policy: str, text: str | None = None) -> ModerationCheck:
        return self.send(self.calls.moderate(image, policy, text))

    def moderation_queue(self, collection: str, limit: int = 100) -> dict[str, Any]:
        return self.send(self.calls.moderation_queue(collection, limit))

    def decide(self, collection: str, id: int, decision: str, note: str | None = None) -> dict[str, Any]:
        return self.send(self.calls.decide(collection, id, decision, note))


class AsyncClient(ClientBase):
    """The async twin of ``Client``: the same methods, awaited."""

    def __init__(
        self, url: str, key: str | None = None, *, timeout: float = 60.0, retries: int = 3, max_wait: float = 30.0
    ) -> None:
        super().__init__(url, key, timeout, retries, max_wait)
        self._http = httpx_module().AsyncClient(base_url=self.url, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        for attempt in range(self.retries + 1):
            response = await self._http.request(call.method, call.path, **self._kwargs(call))
            if response.status_code in RETRYABLE and attempt < self.retries:
                await asyncio.sleep(retry_wait(response, self.max_wait))
                continue
            if response.status_code >= 400:
                raise api_error(response)
            return call.parse(response.json()) if response.content else call.parse(None)
        raise AssertionError("unreachable")

    async def search_text(self, query: str, collection: str, k: int = 10, **options: Any) -> SearchResult:
        return await self.send(self.calls.search_text(query, collection, k, **options))

    async def search_image(self, image: Image, collection: str, k: int = 10, **options: Any) -> SearchResult:
        return await self.send(self.calls.search_image(image, collection, k, **options))

    async def similar(self, collection: str, id: int, k: int = 10, filters: dict | None = None) -> SearchResult:
        return await self.send(self.calls.similar(collection, id, k, filters))

    async def embed_texts(self, texts: Sequence[str], **kw: Any) -> Embeddings:
        return await self.send(self.calls.embed_texts(texts, **kw))

    async def embed_images(self, images: Sequence[Image], **kw: Any) -> Embeddings:
        return await self.send(self.calls.embed_images(images, **kw))

    async def collections(self) -> list[CollectionInfo]:
        return await self.send(self.calls.collections())

    async def collection(self, name: str) -> CollectionInfo:
        return await self.send(self.calls.collection(name))

    async def create_collection(self, name: str, model: str | None = None) -> CollectionInfo:
        return await self.send(self.calls.create_collection(name, model))

    async def upload(self, collection: str, images: Sequence[Image]) -> Upload:
        return await self.send(self.calls.upload(collection, images))

    async def record(self, collection: str, id: int) -> dict[str, Any]:
        return await self.send(self.calls.record(collection, id))

    async def start_index_job(self, collection: str, paths: Sequence[str]) -> Job:
        return await self.send(self.calls.start_index_job(collection, paths))

    async def job(self, job_id: str) -> Job:
        return await self.send(self.calls.job(job_id))

    async def jobs(self, collection: str | None = None, state: str | None = None, limit: int = 50) -> list[Job]:
        return await self.send(self.calls.jobs(collection, state, limit))

    async def cancel_job(self, job_id: str) -> Job:
        return await self.send(self.calls.cancel_job(job_id))

    async def wait_job(self, job_id: str, timeout: float = 600.0, poll: float = 0.5) -> Job:
        deadline = time.monotonic() + timeout
        while not (job := await self.job(job_id)).done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout} s")
            await asyncio.sleep(poll)
        return job

    async def moderate(self, image: Image, policy: str, text: str | None = None) -> ModerationCheck:
        return await self.send(self.calls.moderate(image, policy, text))

    async def moderation_queue(self, collection: str, limit: int = 100) -> dict[str, Any]:
        return await self.send(self.calls.moderation_queue(collection, limit))

    async def decide(self, collection: str, id: int, decision: str, note: str | None = None) -> dict[str, Any]:
        return await self.send(self.calls.decide(collection, id, decision, note))
