"""A re-ranker that loads on its first use.

A served collection offers re-ranking with its own model's ITM head, but the head needs the
full torch checkpoint, while a text search on a recorded OpenVINO text tower needs none of it
(models/openvino_query.py). ``LazyReranker`` stands in for the ITM re-ranker: the engine can
say it re-ranks (and with which model) at once, and the checkpoint loads only when a query
actually asks for ITM.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rerank.base import Candidate, RecordRead, Reranker, RerankOutcome


class LazyReranker(Reranker):
    """``load()``'s re-ranker, built on the first call that needs it (once, thread-safe)."""

    def __init__(self, model_id: str, name: str, load: Callable[[], Reranker]) -> None:
        self._model_id = model_id
        self.name = name
        self._load = load
        self._loaded: Reranker | None = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def is_loaded(self) -> bool:
        return self._loaded is not None

    def loaded(self) -> Reranker:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def image_query(self, embedder: Any, image: Any, pixels: Any) -> tuple[Any, Any]:
        return self.loaded().image_query(embedder, image, pixels)

    def image_token_source(self, embedder: Any) -> str:
        return self.loaded().image_token_source(embedder)

    def candidate_token_source(self) -> str:
        return self.loaded().candidate_token_source()

    def rerank_images(
        self, text: str, candidates: Sequence[Candidate], fusion: str, read: RecordRead | None = None
    ) -> RerankOutcome:
        return self.loaded().rerank_images(text, candidates, fusion, read)

    def rerank_texts(
        self, image_tokens: Any, texts: Mapping[int, str], candidates: Sequence[Candidate], fusion: str
    ) -> RerankOutcome:
        return self.loaded().rerank_texts(image_tokens, texts, candidates, fusion)
