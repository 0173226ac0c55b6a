"""Per-process state: loaded models (shared across collections) and one engine per collection.

Engines are rebuilt when the collection's manifest changes (new shards, a new index), so a
search never sees a half-committed batch: it sees the last committed manifest.
"""

from __future__ import annotations

import threading
from typing import Any

from blipsearch.config import Settings
from models.base import Embedder
from search.engine import SearchEngine
from search.service import load_model, open_engine
from storage.collection import Collection


class AppState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._embedders: dict[str, Embedder] = {}
        self._engines: dict[str, tuple[tuple[Any, ...], SearchEngine]] = {}
        self._captioner: Any = None

    def embedder(self, model_id: str) -> Embedder:
        with self._lock:
            if model_id not in self._embedders:
                self._embedders[model_id] = load_model(self.settings, model_id)
            return self._embedders[model_id]

    def engine(self, name: str) -> SearchEngine:
        coll = Collection.open(self.settings.data_dir, name)
        m = coll.manifest
        version = (m.next_id, m.next_shard, m.index.file if m.index else None)
        cached = self._engines.get(name)
        if cached and cached[0] == version:
            return cached[1]
        embedder = self.embedder(m.model_id)
        engine = open_engine(self.settings, name, embedder=embedder, rerank=True)
        with self._lock:
            self._engines[name] = (version, engine)
        return engine

    def captioner(self) -> Any:
        with self._lock:
            if self._captioner is None:
                from blipsearch.commands.captioning import load_captioner

                self._captioner = load_captioner(self.settings, None)
            return self._captioner

    def forget(self, name: str) -> None:
        with self._lock:
            self._engines.pop(name, None)

    def loaded(self) -> dict[str, Any]:
        return {"models": sorted(self._embedders), "collections": sorted(self._engines)}
