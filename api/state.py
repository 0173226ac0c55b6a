"""Per-process state: loaded models (shared across collections) and one engine per collection.

Engines are rebuilt when the collection's manifest changes (new shards, a new index), so a
search never sees a half-committed batch: it sees the last committed manifest.
"""

from __future__ import annotations

import threading
from typing import Any

from blipsearch.config import Settings
from blipsearch.errors import BlipsearchError
from models.base import Embedder
from search.engine import SearchEngine
from search.service import load_model, open_engine
from storage.collection import Collection


class AppState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._embedders: dict[str, Embedder] = {}
        self._open_lock = threading.Lock()
        # name -> (the collection's created_at, engine): a re-created collection gets a new engine
        self._engines: dict[str, tuple[Any, SearchEngine]] = {}
        self._captioner: Any = None

    def embedder(self, model_id: str) -> Embedder:
        with self._lock:
            if model_id not in self._embedders:
                self._embedders[model_id] = load_model(self.settings, model_id)
            return self._embedders[model_id]

    def engine(self, name: str) -> SearchEngine:
        """The collection's engine, synced with its latest commit (uploads, deletes)."""
        if not Collection.exists(self.settings.data_dir, name):
            self.forget(name)
            Collection.open(self.settings.data_dir, name)  # raises CollectionNotFoundError
        with self._lock:
            cached = self._engines.get(name)
        if cached is not None:
            try:
                cached[1].sync()
                if cached[1].coll.manifest.created_at == cached[0]:
                    return cached[1]
            except BlipsearchError:  # the collection was re-created under the same name
                pass
        coll = Collection.open(self.settings.data_dir, name)
        embedder = self.embedder(coll.manifest.model_id)
        with self._open_lock:  # one loader per process; others wait and reuse it
            with self._lock:
                again = self._engines.get(name)
            if again is not None and again[0] == coll.manifest.created_at:
                return again[1]
            engine = open_engine(self.settings, name, embedder=embedder, rerank=True)
            with self._lock:
                self._engines[name] = (coll.manifest.created_at, engine)
        return engine

    def engines(self) -> dict[str, SearchEngine]:
        with self._lock:
            return {name: e for name, (_, e) in self._engines.items()}

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
