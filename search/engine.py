"""Query a collection: encode the query, exact top-k from the index, attach record fields."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from blipsearch.errors import InvalidInputError
from models.base import Embedder
from search import index_store
from search.vector_index import VectorIndex
from storage.collection import Collection

if TYPE_CHECKING:
    from PIL import Image

MAX_K = 1000


@dataclass
class Hit:
    id: int
    uri: str
    score: float
    caption: str | None
    width: int | None = None
    height: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SearchEngine:
    def __init__(self, collection: Collection, embedder: Embedder, index: VectorIndex) -> None:
        collection.check_model(embedder.fingerprint, embedder.model_id)
        self.coll = collection
        self.embedder = embedder
        self.index = index
        self.timing_ms: dict[str, float] = {}

    @classmethod
    def open(cls, collection: Collection, embedder: Embedder) -> SearchEngine:
        collection.check_model(embedder.fingerprint, embedder.model_id)
        index, _ = index_store.load(collection, embedder.fingerprint)
        return cls(collection, embedder, index)

    def search_text(self, text: str, k: int = 10) -> list[Hit]:
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("The text query is empty.")
        t0 = time.perf_counter()
        q = self.embedder.embed_texts([text])[0]
        return self._search(q, k, t0)

    def search_image(self, image: Image.Image, k: int = 10) -> list[Hit]:
        t0 = time.perf_counter()
        q = self.embedder.embed_images([image])[0]  # [dim] or [32, dim] for BLIP-2
        return self._search(q, k, t0)

    def search_vector(self, query: np.ndarray, k: int = 10) -> list[Hit]:
        return self._search(query, k, time.perf_counter())

    def _search(self, query: np.ndarray, k: int, t0: float) -> list[Hit]:
        if not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be between 1 and {MAX_K}, got {k}.")
        t1 = time.perf_counter()
        ids, scores = self.index.search(query, k)
        t2 = time.perf_counter()
        records = self.coll.get_records(ids.tolist())
        hits = [
            Hit(int(i), r["uri"], float(s), r["caption"], r["width"], r["height"])
            for i, s in zip(ids, scores, strict=True)
            if (r := records.get(int(i))) is not None
        ]
        self.timing_ms = {
            "encode": round((t1 - t0) * 1e3, 3),
            "search": round((t2 - t1) * 1e3, 3),
            "fetch": round((time.perf_counter() - t2) * 1e3, 3),
        }
        return hits
