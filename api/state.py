"""Per-process state: loaded models (shared across collections), one engine per collection,
one micro-batcher of query encodes per model, and the background jobs.

Engines follow their collection's commits (``SearchEngine.sync``: new shards, tombstones, a
compaction), so a search sees the last committed manifest, never a half-added batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from api.decoding import DecodeGate
from api.jobs import JobRunner
from blipsearch.config import Settings
from blipsearch.errors import BlipsearchError, InvalidInputError
from models.base import Embedder
from search.batcher import MicroBatcher
from search.budget import CostBudget
from search.engine import IndexLoader, SearchEngine
from service.engines import make_reranker, open_engine
from service.models import load_captioner, load_itm_scorer, load_model
from storage.collection import Collection


class AppState:
    def __init__(self, settings: Settings, index_loader: IndexLoader | None = None) -> None:
        self.settings = settings
        self.index_loader = index_loader  # None: each collection's saved index (else: sharded serving)
        self._lock = threading.Lock()
        self._embedders: dict[str, Embedder] = {}
        self._open_lock = threading.Lock()
        # name -> (the collection's created_at, engine): a re-created collection gets a new engine
        self._engines: dict[str, tuple[Any, SearchEngine]] = {}
        self._captioner: Any = None
        self._batchers: dict[str, MicroBatcher[Any, np.ndarray]] = {}  # "text_encode/<model>" -> batcher
        self._itm_scorers: dict[str, Any] = {}  # rerank_model -> ItmScorer
        self._rerankers: dict[tuple[str, str], tuple[SearchEngine, Any]] = {}
        self._moderators: dict[str, tuple[tuple[str, int], Any]] = {}
        self.on_batch: Callable[[str, str, int], None] | None = None  # (model, kind, size): metrics
        self.jobs = JobRunner(settings)
        # ITM re-rank candidates in flight across requests (api/routes/search.py)
        self.rerank_budget = CostBudget(settings.rerank_budget, "re-ranking", "candidates")
        self.decodes = DecodeGate(settings.max_concurrent_decodes)  # uploads decoded off the event loop

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
            # CLIP / SigLIP / ALIGN have no ITM head: their engines re-rank only with a named
            # rerank_model (AppState.reranker); asking for --rerank without one is a 422.
            encode = self.text_batcher(embedder).submit if self.settings.microbatch else None
            engine = open_engine(
                self.settings,
                name,
                embedder=embedder,
                rerank=embedder.has_itm,
                encode_text=encode,
                index_loader=self.index_loader,
            )
            with self._lock:
                self._engines[name] = (coll.manifest.created_at, engine)
        return engine

    def itm_scorer(self, model_id: str) -> Any:
        """A BLIP / BLIP-2 ITM model by name: BLIPSEARCH_ALLOWED_MODELS or the default model only."""
        s = self.settings
        if model_id not in {s.model, *s.allowed_models}:
            raise InvalidInputError(
                f"rerank_model {model_id!r} is not allowed here: use {s.model!r} or a model listed in "
                "BLIPSEARCH_ALLOWED_MODELS."
            )
        with self._lock:
            scorer = self._itm_scorers.get(model_id)
        if scorer is None:
            scorer = load_itm_scorer(s, self.embedder(model_id), model_id)
            with self._lock:
                self._itm_scorers[model_id] = scorer
        return scorer

    def reranker(self, name: str, rerank_model: str) -> Any:
        """The collection's re-ranker with ``rerank_model``'s ITM head (cross-family re-ranking)."""
        engine = self.engine(name)
        key = (name, rerank_model)
        with self._lock:
            cached = self._rerankers.get(key)
        if cached is not None and cached[0] is engine:
            return cached[1]
        reranker = make_reranker(self.settings, engine.coll, engine.embedder, self.itm_scorer(rerank_model))
        with self._lock:
            self._rerankers[key] = (engine, reranker)
        return reranker

    def text_batcher(self, embedder: Embedder) -> MicroBatcher[Any, np.ndarray]:
        """The model's shared micro-batcher of text → ITC query vector."""

        def encode(texts: list[str]) -> list[np.ndarray]:
            return list(embedder.embed_texts(texts))

        return self._batcher("text", embedder.model_id, encode)

    def image_batcher(self, embedder: Embedder) -> MicroBatcher[Any, np.ndarray]:
        """The model's shared micro-batcher of decoded image → ITC vector(s), exactly as an
        image query is encoded (the model's preprocessing, then its vision forward)."""

        def encode(images: list[Any]) -> list[np.ndarray]:
            return list(embedder.embed_pixels(embedder.preprocess(images)))

        return self._batcher("image", embedder.model_id, encode)

    def _batcher(self, kind: str, model: str, encode: Callable[[list[Any]], list[np.ndarray]]) -> MicroBatcher:
        with self._lock:
            batcher = self._batchers.get(f"{kind}_encode/{model}")
            if batcher is None:
                s = self.settings
                batcher = MicroBatcher(
                    encode,
                    max_size=s.microbatch_max_size,
                    wait_s=s.microbatch_wait_ms / 1e3,
                    max_queue=s.max_queue,
                    name=f"{kind}-encode",
                    on_batch=lambda n: self.on_batch(model, kind, n) if self.on_batch else None,
                )
                self._batchers[f"{kind}_encode/{model}"] = batcher
            return batcher

    def embed_texts(self, embedder: Embedder, texts: list[str]) -> np.ndarray:
        """[n, dim] text vectors, sharing forward passes with concurrent queries when micro-batching."""
        if not self.settings.microbatch:
            return embedder.embed_texts(texts)
        return np.stack(self.text_batcher(embedder).submit_many(texts))

    def embed_images(self, embedder: Embedder, images: list[Any]) -> np.ndarray:
        """[n, dim] (BLIP) or [n, vectors_per_image, dim] (BLIP-2) image vectors."""
        if not self.settings.microbatch:
            return embedder.embed_images(images)
        return np.stack(self.image_batcher(embedder).submit_many(images))

    def queue_depths(self) -> dict[str, float]:
        with self._lock:
            depths: dict[str, float] = {key: b.depth for key, b in self._batchers.items()}
        depths["jobs_running"] = self.jobs.running()
        depths["rerank_candidates"] = self.rerank_budget.in_flight
        depths["decodes_running"] = self.decodes.running
        return depths

    def close(self) -> None:
        self.jobs.shutdown()
        with self._lock:
            batchers = list(self._batchers.values())
            self._batchers.clear()
        for b in batchers:
            b.close()

    def engines(self) -> dict[str, SearchEngine]:
        with self._lock:
            return {name: e for name, (_, e) in self._engines.items()}

    def moderator(self, policy: str) -> Any:
        """The named policy's Moderator (policy folder), rebuilt when the file changes."""
        from moderation.policy import load_policy
        from service.moderation import build_moderator, policy_path

        path = policy_path(self.settings, policy)
        key = (str(path), path.stat().st_mtime_ns)
        with self._lock:
            cached = self._moderators.get(policy)
        if cached is not None and cached[0] == key:
            return cached[1]
        pol = load_policy(path)
        model = self.settings.model
        if pol.blocklist is not None:  # the blocklist's model, so its vectors are comparable
            model = Collection.open(self.settings.data_dir, pol.blocklist.collection).manifest.model_id
        moderator = build_moderator(self.settings, pol, embedder=self.embedder(model))
        with self._lock:
            self._moderators[policy] = (key, moderator)
        return moderator

    def captioner(self) -> Any:
        with self._lock:
            if self._captioner is None:
                self._captioner = load_captioner(self.settings, None)
            return self._captioner

    def forget(self, name: str) -> None:
        with self._lock:
            self._engines.pop(name, None)

    def loaded(self) -> dict[str, Any]:
        return {"models": sorted(self._embedders), "collections": sorted(self._engines)}
