"""Per-process state of the API: what it loaded, held in one keyed model cache
(service/model_cache.py), and the background jobs.

Engines follow their collection's commits (``SearchEngine.sync``: new shards, tombstones, a
compaction), so a search sees the last committed manifest, never a half-added batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
from service.model_cache import Key, ModelCache
from service.models import full_embedder, load_captioner, load_itm_scorer, load_query_model
from storage.collection import Collection

if TYPE_CHECKING:
    from models.captioners import Captioner
    from models.itm import ItmScorer
    from moderation.checks import Moderator
    from rerank.itm import ItmReranker

log = logging.getLogger(__name__)
WARM_COLLECTIONS = 16  # collections whose engines `serve` loads before it answers /readyz


class AppState:
    """What one API process holds: its settings, one ``ModelCache`` of the loaded models
    (embedders, ITM scorers, the captioner, moderators) and of what is built on them (one
    engine per collection, one re-ranker per collection and ITM model, one micro-batcher of
    query encodes per model), the re-rank and decode budgets, and the job runner."""

    def __init__(self, settings: Settings, index_loader: IndexLoader | None = None) -> None:
        self.settings = settings
        self.index_loader = index_loader  # None: each collection's saved index (else: sharded serving)
        self.models = ModelCache(settings.model_idle_s, on_evict=_close_evicted)
        self.models.start_reaper()
        self._opts = (settings.device, settings.dtype, settings.precision)  # what a model key carries
        self._embedders = self.models.view("embedder", *self._opts)  # model id -> loaded embedder
        self.on_batch: Callable[[str, str, int], None] | None = None  # (model, kind, size): metrics
        self.jobs = JobRunner(settings)
        # ITM re-rank candidates in flight across requests (api/routes/search.py)
        self.rerank_budget = CostBudget(settings.rerank_budget, "re-ranking", "candidates")
        self.decodes = DecodeGate(settings.max_concurrent_decodes)  # uploads decoded off the event loop

    def _embedder_key(self, model_id: str) -> Key:
        return ("embedder", model_id, *self._opts)

    def query_embedder(self, model_id: str) -> Embedder:
        """The model as searches use it: where a text query already ran on the model's OpenVINO
        text tower (same options), the recorded tower without torch or the checkpoint, which
        loads the full model on first use of anything else (models/openvino_query.py); else
        the full embedder. Kept under the model's one cache key."""
        return self.models.get(self._embedder_key(model_id), lambda: load_query_model(self.settings, model_id))

    def embedder(self, model_id: str) -> Embedder:
        """The full embedder (torch checkpoint, processor, tokenizer): for uploads, indexing
        jobs, ITM heads and moderation. The same loaded model as ``query_embedder``'s."""
        return full_embedder(self.query_embedder(model_id))

    def engine(self, name: str) -> SearchEngine:
        """The collection's engine, synced with its latest commit (uploads, deletes)."""
        if not Collection.exists(self.settings.data_dir, name):
            self.forget(name)
            Collection.open(self.settings.data_dir, name)  # raises CollectionNotFoundError
        key: Key = ("engine", name)
        cached = self.models.peek(key)
        if cached is not None:
            engine, created = cached
            try:
                engine.sync()
                if engine.coll.manifest.created_at == created:
                    return engine
            except BlipsearchError:  # the collection was re-created under the same name
                pass
        coll = Collection.open(self.settings.data_dir, name)
        model = coll.manifest.model_id
        embedder = self.query_embedder(model)

        def load() -> SearchEngine:
            # CLIP / SigLIP / ALIGN have no ITM head: their engines re-rank only with a named
            # rerank_model (AppState.reranker); asking for --rerank without one is a 422.
            # The own head loads with the first re-ranked query (lazy_rerank), so opening an
            # engine for text search needs no torch checkpoint when a query record exists.
            encode = self.text_batcher(embedder).submit if self.settings.microbatch else None
            return open_engine(
                self.settings,
                name,
                embedder=embedder,
                rerank=embedder.has_itm,
                lazy_rerank=True,
                encode_text=encode,
                index_loader=self.index_loader,
            )

        needs = (self._embedder_key(model),)
        return self.models.get(key, load, stamp=coll.manifest.created_at, needs=needs, expires=False)

    def check_rerank_model(self, model_id: str | None) -> None:
        """422 for a ``rerank_model`` outside the allow-list: checked before any model loads."""
        s = self.settings
        if model_id is not None and model_id not in {s.model, *s.allowed_models}:
            raise InvalidInputError(
                f"rerank_model {model_id!r} is not allowed here: use {s.model!r} or a model listed in "
                "BLIPSEARCH_ALLOWED_MODELS."
            )

    def itm_scorer(self, model_id: str) -> ItmScorer:
        """A BLIP / BLIP-2 ITM model by name: BLIPSEARCH_ALLOWED_MODELS or the default model only."""
        s = self.settings
        self.check_rerank_model(model_id)
        embedder = self.embedder(model_id)
        key: Key = ("itm", model_id, *self._opts, s.itm_first_token, s.itm_batch_size)
        loaded: ItmScorer = self.models.get(
            key, lambda: load_itm_scorer(s, embedder, model_id), needs=(self._embedder_key(model_id),)
        )
        return loaded

    def reranker(self, engine: SearchEngine | str, rerank_model: str) -> ItmReranker:
        """The collection's re-ranker with ``rerank_model``'s ITM head (cross-family re-ranking).
        ``engine``: the request's engine (a collection name resolves it here)."""
        if isinstance(engine, str):
            engine = self.engine(engine)
        scorer = self.itm_scorer(rerank_model)
        s = self.settings
        key: Key = ("reranker", engine.coll.name, rerank_model)
        itm_key: Key = ("itm", rerank_model, *self._opts, s.itm_first_token, s.itm_batch_size)
        found: ItmReranker = self.models.get(
            key,
            lambda: make_reranker(s, engine.coll, engine.embedder, scorer),
            stamp=id(engine),  # a re-opened engine gets a new re-ranker
            needs=(("engine", engine.coll.name), itm_key),
            expires=False,
        )
        return found

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
        s = self.settings

        def make() -> MicroBatcher[Any, np.ndarray]:
            return MicroBatcher(
                encode,
                max_size=s.microbatch_max_size,
                wait_s=s.microbatch_wait_ms / 1e3,
                max_queue=s.max_queue,
                name=f"{kind}-encode",
                on_batch=lambda n: self.on_batch(model, kind, n) if self.on_batch else None,
            )

        key: Key = ("batcher", f"{kind}_encode/{model}")
        batcher: MicroBatcher[Any, np.ndarray] = self.models.get(
            key, make, needs=(self._embedder_key(model),), expires=False
        )
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
        depths: dict[str, float] = {str(key[1]): b.depth for key, b in self.models.items("batcher")}
        depths["jobs_running"] = self.jobs.running()
        depths["rerank_candidates"] = self.rerank_budget.in_flight
        depths["decodes_running"] = self.decodes.running
        return depths

    def warm(self, limit: int = WARM_COLLECTIONS) -> list[str]:
        """Load, before the first request, what a first text search needs: the engine (model,
        index) of each collection (at most ``limit``, by name), and one text search on it (the
        query encoder, compiled on first use, and the record reads). A collection that does
        not open is logged and left to its first request. Returns the collections warmed."""
        from storage.catalog import open_catalog

        names = sorted(
            row.name
            for row in open_catalog(self.settings.catalog_url()).list_collections()
            if Collection.exists(self.settings.data_dir, row.name)
        )  # names only: the full listing reads every shard (photo field counts)
        warmed = []
        for name in names[:limit]:
            try:
                self.engine(name).search_text("warm up", k=1)
            except Exception:
                log.warning("could not warm collection %s at start-up", name, exc_info=True)
                continue
            warmed.append(name)
        return warmed

    def close(self) -> None:
        self.jobs.shutdown()
        self.models.close()  # stops the micro-batchers too

    def engines(self) -> dict[str, SearchEngine]:
        return {str(key[1]): e for key, e in self.models.items("engine")}

    def moderator(self, policy: str) -> Moderator:
        """The named policy's Moderator (policy folder), rebuilt when the file changes."""
        from moderation.policy import load_policy
        from service.moderation import build_moderator, policy_path

        path = policy_path(self.settings, policy)
        stamp = (str(path), path.stat().st_mtime_ns)
        pol = None
        model = self.settings.model
        cached = self.models.peek(("moderator", policy))
        if cached is None or cached[1] != stamp:
            pol = load_policy(path)
            if pol.blocklist is not None:  # the blocklist's model, so its vectors are comparable
                model = Collection.open(self.settings.data_dir, pol.blocklist.collection).manifest.model_id
        else:
            return cached[0]

        def load() -> Moderator:
            assert pol is not None
            return build_moderator(self.settings, pol, embedder=self.embedder(model))

        found: Moderator = self.models.get(("moderator", policy), load, stamp=stamp, needs=(self._embedder_key(model),))
        return found

    def captioner(self) -> Captioner:
        s = self.settings
        key: Key = ("captioner", s.caption_model, *self._opts)
        found: Captioner = self.models.get(key, lambda: load_captioner(s, None))
        return found

    def forget(self, name: str) -> None:
        self.models.pop(("engine", name))

    def loaded(self) -> dict[str, Any]:
        return {"models": sorted(self._embedders), "collections": sorted(self.engines())}


def _close_evicted(key: Key, value: Any) -> None:
    """An evicted micro-batcher stops its thread (the others are freed by dropping them)."""
    if key[0] == "batcher":
        value.close()
