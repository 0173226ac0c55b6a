"""Query a collection: plan the query once (search/plan.py), then run it once: encode the
query, exact ITC top-k, optional ITM re-rank, attach records.

Image collections answer text→image and image→image; text collections answer image→text.
ITM re-ranking follows the BLIP protocol: an ITC shortlist of ``rerank_k``, re-scored by the
ITM head, fused (rerank/fusion/), then cut to ``k``. Image→image has no ITM; it stays ITC.

Executing a plan reads each record once and computes each candidate's ITC score once: the
index's search scores are reused for the re-rank when they are exact (search/index_base.py:
``exact_scores``); only candidates without one (keyword hits, compressed codes) are scored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from blipsearch.errors import (
    CollectionReplacedError,
    InvalidInputError,
    NoItmModelError,
    RecordNotFoundError,
    StorageError,
)
from models.base import Embedder
from rerank.base import Candidate, Reranker, RerankOutcome
from rerank.fusion import check_fusion
from search import index_store
from search.execute import RecordReader, run
from search.faiss_index import FaissIndex
from search.index_base import SearchIndex, without
from search.limits import (
    DEFAULT_FUSION,
    DEFAULT_K,
    DEFAULT_RERANK_K,
    HYBRID_DEPTH,
    MAX_K,
    MAX_RERANK_K,
    MODES,
    RRF_K,
)
from search.plan import QueryPlan, Ran, RerankStep, Selection, describe_index, explain, select
from search.query.confidence import no_confident_match
from search.query.parts import Part, check_parts, rerank_text
from search.query.score import rule
from search.results import Hit, QueryOptions, SearchResult, finish
from storage.collection import Collection
from storage.fulltext import KeywordIndex
from storage.manifest import MANIFEST_NAME

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["HYBRID_DEPTH", "MAX_K", "MAX_RERANK_K", "MODES", "IndexLoader", "QueryOptions", "SearchEngine"]
log = logging.getLogger(__name__)
IndexLoader = Callable[[Collection], SearchIndex]


class SearchEngine:
    """One collection's query side. Owns the collection handle, its model (``embedder``), its
    index (any kind: search/index_base.py) kept in step with commits (``sync``), the optional
    ITM re-ranker and keyword index; plans queries (``plan_*``) and executes them (``execute``).
    ``search_*`` plan and execute in one call."""

    def __init__(
        self,
        collection: Collection,
        embedder: Embedder,
        index: SearchIndex,
        reranker: Reranker | None = None,
        keyword: KeywordIndex | None = None,
        *,
        decisions: Callable[[set[str]], np.ndarray] | None = None,
        encode_text: Callable[[str], np.ndarray] | None = None,
        index_loader: IndexLoader | None = None,
    ):
        collection.check_model(embedder.fingerprint, embedder.model_id)
        self.coll = collection
        self.embedder = embedder
        self.index = index
        self.reranker = reranker
        self.keyword = keyword
        self._sync_lock = threading.Lock()
        self._manifest_stamp = _stamp(collection)
        # decisions -> record ids with those moderation decisions (the catalog's, via service/)
        self.decisions = decisions
        # text -> ITC query vector; the API passes a micro-batched encoder (search/batcher.py)
        self.encode_text: Callable[[str], np.ndarray] = encode_text or (lambda t: embedder.embed_texts([t])[0])
        # collection -> its index, instead of the saved FAISS index (a sharded server's index)
        self.index_loader = index_loader

    @classmethod
    def open(
        cls,
        collection: Collection,
        embedder: Embedder,
        reranker: Reranker | None = None,
        keyword: KeywordIndex | None = None,
        *,
        decisions: Callable[[set[str]], np.ndarray] | None = None,
        encode_text: Callable[[str], np.ndarray] | None = None,
        index_loader: IndexLoader | None = None,
    ) -> SearchEngine:
        """The engine over ``collection``'s saved index, or over ``index_loader(collection)``."""
        collection.check_model(embedder.fingerprint, embedder.model_id)
        index: SearchIndex
        if index_loader is not None:
            index = index_loader(collection)
        else:
            index, _ = index_store.load(collection, embedder.fingerprint)
        return cls(
            collection,
            embedder,
            index,
            reranker,
            keyword,
            decisions=decisions,
            encode_text=encode_text,
            index_loader=index_loader,
        )

    def sync(self) -> bool:
        """Catch up with commits made since this engine was opened (uploads, deletes, a new
        index spec). Cheap when nothing changed (one stat). Returns True if the index changed."""
        stamp = _stamp(self.coll)
        if stamp == self._manifest_stamp:
            return False
        with self._sync_lock:
            if stamp == self._manifest_stamp:
                return False
            m = self.coll.reload()
            if m.superseded_by:  # re-embedded: the owner must open the new version (new model too)
                raise CollectionReplacedError(
                    f"Collection {self.coll.name!r} was re-embedded (version {m.superseded_by}); reopen it."
                )
            if self.index_loader is not None or not isinstance(self.index, FaissIndex):
                if self.index_loader is not None:  # an index made from the manifest: make it again
                    self.index = self.index_loader(self.coll)
                self._manifest_stamp = stamp
                return True
            try:
                if m.index is not None and m.index.spec != self.index.spec:
                    raise index_store.StaleIndexError("the index spec changed")
                changed = index_store.sync(self.coll, self.index)
            except StorageError as exc:  # compacted, re-specced, or a type that cannot remove
                log.info("reloading the index of %s: %s", self.coll.name, exc)
                self.index, _ = index_store.load(self.coll, self.embedder.fingerprint)
                changed = True
            self._manifest_stamp = stamp
            return changed

    @property
    def kind(self) -> str:
        return self.coll.manifest.kind

    # -- planning -----------------------------------------------------------------------
    def plan_text(
        self,
        text: str,
        k: int = DEFAULT_K,
        *,
        rerank: bool = False,
        rerank_k: int = DEFAULT_RERANK_K,
        fusion: str = DEFAULT_FUSION,
        mode: str = "vector",
        rrf_k: int = RRF_K,
        options: QueryOptions | None = None,
        reranker: Reranker | None = None,
        rerank_model: str | None = None,
        target: str = "all",
    ) -> QueryPlan:
        """Text → image (image collections only): ``mode`` vector (ITC), keyword, or hybrid (RRF).
        ``target`` (keyword and hybrid): the text fields searched, ``all``, ``ocr`` or ``captions``.

        ``reranker`` overrides the engine's own for this query; ``rerank_model`` names one the
        caller will pass to ``execute`` (loaded only once the plan says it re-ranks)."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("The text query is empty.")
        if self.kind != "images":
            raise InvalidInputError(f"{self.coll.name!r} is a text collection: search it with an image.")
        if mode not in MODES:
            raise InvalidInputError(f"Unknown mode {mode!r}: use one of {', '.join(MODES)}.")
        if target != "all" and mode == "vector":
            raise InvalidInputError(f"target {target!r} searches text fields: use mode keyword or hybrid.")
        self._check(k, rerank_k, fusion)
        step = self._rerank_step(rerank, fusion, max(k, rerank_k), reranker, rerank_model, "text")
        depth = step.depth if step is not None else k
        hybrid = mode == "hybrid"
        return self._plan(
            "text",
            mode,
            k,
            depth if mode == "vector" else max(depth, HYBRID_DEPTH if hybrid else 0),
            "the model's text encoder",
            options,
            text,
            step,
            reranker,
            keyword_depth=None if mode == "vector" else max(depth, HYBRID_DEPTH if hybrid else 0),
            rrf_k=rrf_k if hybrid else None,
            target=target if mode != "vector" else None,
        )

    def plan_image(
        self,
        image: Image.Image,
        k: int = DEFAULT_K,
        *,
        rerank: bool = False,
        rerank_k: int = DEFAULT_RERANK_K,
        fusion: str = DEFAULT_FUSION,
        options: QueryOptions | None = None,
        reranker: Reranker | None = None,
        rerank_model: str | None = None,
    ) -> QueryPlan:
        """Image → image on image collections, image → text (ITM re-rank possible) on text collections.
        Re-ranking an image → image query is refused: ITM scores an image against a text."""
        self._check(k, rerank_k, fusion)
        step = None
        if rerank and self.kind == "images" and fusion != "itc":
            raise InvalidInputError(
                "--rerank / rerank does not apply to image → image search: ITM scores an image against a text. "
                "Add a text to the query (search --image Q --text T --rerank) or drop rerank."
            )
        if self.kind == "texts":
            step = self._rerank_step(rerank, fusion, max(k, rerank_k), reranker, rerank_model, "image")
        depth = step.depth if step is not None else k
        return self._plan("image", "vector", k, depth, "the model's vision encoder", options, image, step, reranker)

    def plan_similar(self, rid: int, k: int = DEFAULT_K, options: QueryOptions | None = None) -> QueryPlan:
        """ "More like this": nearest records to record ``rid``'s own stored vectors (itself excluded)."""
        self._check(k, 1, "itc")
        if self.coll.locate(int(rid)) is None:
            raise RecordNotFoundError(f"Collection {self.coll.name!r} has no record {rid}.")
        encode = f"the stored vectors of record {int(rid)}"
        return self._plan("similar", "vector", k, min(k + 1, MAX_K), encode, options, int(rid), None, None)

    def plan_query(
        self,
        parts: list[Part],
        k: int = DEFAULT_K,
        *,
        rerank: bool = False,
        rerank_k: int = DEFAULT_RERANK_K,
        fusion: str = DEFAULT_FUSION,
        options: QueryOptions | None = None,
        reranker: Reranker | None = None,
        rerank_model: str | None = None,
    ) -> QueryPlan:
        """A weighted query (search/query/parts.py, scored as search/query/score.py says):
        texts, images, records of this collection (excluded from the results) and vectors.
        ITM re-ranks with the positive text parts (image collections)."""
        self._check(k, rerank_k, fusion)
        check_parts(parts)
        examples = [int(p.value) for p in parts if p.kind == "record"]
        for p in parts:
            if p.kind == "text" and self.kind != "images":
                raise InvalidInputError(f"{self.coll.name!r} is a text collection: its queries have no text parts.")
            if p.kind == "record" and self.coll.locate(int(p.value)) is None:
                raise InvalidInputError(
                    f"{p.source or 'The query'} names record {int(p.value)}, which collection {self.coll.name!r} "
                    "does not hold (unknown, deleted, or of another collection)."
                )
        step = None
        if rerank and fusion != "itc":
            if self.kind != "images" or not rerank_text(parts):
                raise InvalidInputError(
                    "Re-ranking scores a text against images: this query has no positive text part to re-rank with."
                )
            step = self._rerank_step(rerank, fusion, max(k, rerank_k), reranker, rerank_model, "text")
        depth = step.depth if step is not None else k
        single = self.index.vectors_per_item == 1 and self.embedder.vectors_per_image == 1
        encode = "; ".join(f"{p.weight:+g} x {p.kind} {p.describe().get('text', p.source)!r}" for p in parts)
        return self._plan(
            "parts", "vector", k, depth, encode, options, parts, step, reranker, exclude=examples, score=rule(single)
        )

    def part_vectors(self, part: Part) -> np.ndarray:
        """A part's ITC query vector(s): [dim] or [m, dim] (BLIP-2 images and image records: 32)."""
        if part.kind == "text":
            return self.encode_text(str(part.value))
        if part.kind == "image":
            return self.embedder.embed_images([part.value])[0]
        if part.kind == "record":
            return self.index.vectors_of(int(part.value))
        return np.asarray(part.value, np.float32)

    def _plan(
        self,
        query: str,
        mode: str,
        k: int,
        depth: int,
        encode: str,
        options: QueryOptions | None,
        payload: Any,
        step: RerankStep | None,
        reranker: Reranker | None,
        exclude: list[int] | None = None,
        **extra: Any,
    ) -> QueryPlan:
        extra.update(options=options, payload=payload, reranker=reranker)
        sel = select(self.coll, self.index, self.decisions, options)
        if exclude:  # the example records of a query never come back as its results
            sel = sel or Selection(None, None)
            sel.allowed, sel.excluded = without(sel.allowed, sel.excluded, np.array(sorted(set(exclude)), np.int64))
        index = describe_index(self.index, sel, depth)
        name, kind = self.coll.name, self.kind
        return QueryPlan(query, name, kind, mode, k, depth, encode, index, sel, step, **extra)

    def _rerank_step(
        self,
        rerank: bool,
        fusion: str,
        depth: int,
        override: Reranker | None,
        rerank_model: str | None,
        query: str,
    ) -> RerankStep | None:
        """Whether (and how) this query runs ITM: the one place that decides it."""
        if not rerank or fusion == "itc":
            return None
        chosen = override or (None if rerank_model else self._own_reranker())
        model = chosen.model_id if chosen is not None else str(rerank_model)
        if chosen is None:
            tokens = "the named ITM model's vision encoder"
        elif query == "image":
            tokens = chosen.image_token_source(self.embedder)
        else:
            tokens = chosen.candidate_token_source()
        return RerankStep(model, override is None and rerank_model is None, fusion, depth, tokens)

    def _own_reranker(self) -> Reranker:
        if self.reranker is None:
            if not self.embedder.has_itm:
                raise NoItmModelError(
                    f"Re-ranking needs an image-text matching (ITM) model: {self.coll.name!r} was embedded with "
                    f"the {self.embedder.family} model {self.embedder.model_id!r}, which has none. Name a BLIP or "
                    "BLIP-2 ITM checkpoint (search --rerank-model DIR, API rerank_model)."
                )
            raise InvalidInputError("Re-ranking was requested but no re-ranker is loaded.")
        return self.reranker

    @staticmethod
    def _check(k: int, rerank_k: int, fusion: str) -> None:
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be between 1 and {MAX_K}, got {k}.")
        if not isinstance(rerank_k, int) or not 1 <= rerank_k <= MAX_RERANK_K:
            raise InvalidInputError(f"rerank_k must be between 1 and {MAX_RERANK_K}, got {rerank_k}.")
        check_fusion(fusion)

    # -- execution ----------------------------------------------------------------------
    def execute(self, plan: QueryPlan, reranker: Reranker | None = None) -> SearchResult:
        """Run ``plan`` once. ``reranker``: the one the plan's ``rerank_model`` named."""
        chosen = reranker or plan.reranker
        if plan.rerank is not None and chosen is None:
            if not plan.rerank.own_model:
                raise InvalidInputError(f"The plan re-ranks with {plan.rerank.model!r}: pass its re-ranker.")
            chosen = self._own_reranker()
        ran = Ran()
        result = run(self, plan, chosen, ran)
        if plan.rerank is not None:
            result.no_confident_match = no_confident_match(result.hits, plan.options)
        before = len(result.hits)
        result = finish(result, plan.options)
        ran.below_min_score = before - len(result.hits)
        ran.returned = len(result.hits)
        ran.missing_shards = list(result.missing_shards)
        result.explain = explain(plan, ran)
        return result

    def search_text(self, text: str, k: int = DEFAULT_K, **kwargs: Any) -> SearchResult:
        """Plan and run a text query (``plan_text``'s arguments)."""
        return self.execute(self.plan_text(text, k, **kwargs))

    def search_image(self, image: Image.Image, k: int = DEFAULT_K, **kwargs: Any) -> SearchResult:
        """Plan and run an image query (``plan_image``'s arguments)."""
        return self.execute(self.plan_image(image, k, **kwargs))

    def search_similar(self, rid: int, k: int = DEFAULT_K, options: QueryOptions | None = None) -> SearchResult:
        """Plan and run a "more like this" query."""
        return self.execute(self.plan_similar(rid, k, options))

    def search_vector(
        self, query: np.ndarray, n: int, options: QueryOptions | None = None
    ) -> tuple[list[Candidate], tuple[int, ...]]:
        """Top-``n`` (id, ITC score) for a ready query vector ([dim] or [nq, dim]), records not
        fetched, and the index shards the search left out; the same selection (filters, hidden
        decisions) as the other searches."""
        if not isinstance(n, int) or n < 1:
            raise InvalidInputError(f"The number of results must be at least 1, got {n}.")
        return self.shortlist(query, n, {}, select(self.coll, self.index, self.decisions, options))

    def captions_for_image(
        self, image: Image.Image, k: int = DEFAULT_K, options: QueryOptions | None = None, *, rerank: bool = False
    ) -> SearchResult:
        """Image → text over captions: the captions of the nearest images (under ``options``'
        filters), de-duplicated. ITM re-ranking is refused (the captions are ranked by ITC)."""
        if self.kind != "images":
            raise InvalidInputError("target=captions searches an image collection's captions.")
        if rerank:
            raise InvalidInputError("Re-ranking does not apply to target captions: drop rerank (or --rerank).")
        self._check(k, 1, "itc")
        depth = min(MAX_K, max(5 * k, 50))
        plan = self._plan("captions", "vector", k, depth, "the model's vision encoder", options, image, None, None)
        return self.execute(plan)

    def shortlist(
        self, query: np.ndarray, n: int, timing: dict[str, float], sel: Selection | None = None
    ) -> tuple[list[Candidate], tuple[int, ...]]:
        """The index's top ``n`` (id, ITC score) under ``sel``, and the shards it left out."""
        t0 = time.perf_counter()
        if sel is None:
            found = self.index.search(query, n)
        else:
            extra = {} if sel.refine_k is None else {"refine_k": sel.refine_k}  # exact re-rank depth
            found = self.index.search(query, n, sel.params, allowed=sel.allowed, excluded=sel.excluded, **extra)
        timing["search"] = _ms(t0)
        ids, scores = found
        cands = [Candidate(int(i), float(s)) for i, s in zip(ids, scores, strict=True)]
        return cands, tuple(getattr(found, "missing_shards", ()))

    def hits(
        self,
        cands: list[Candidate] | RerankOutcome,
        k: int,
        timing: dict[str, float],
        ran: Ran,
        read: RecordReader | None = None,
    ) -> SearchResult:
        """The top ``k`` candidates (or re-ranked results) with their records (``read``: the
        query's reader, which reads each record once)."""
        dropped: list[dict[str, Any]] = []
        top: list[tuple[int, float, float, float | None]]
        if isinstance(cands, RerankOutcome):
            timing.update({f"rerank_{name}": v for name, v in cands.timing_ms.items()})
            top = [(r.id, r.score, r.itc, r.itm_prob) for r in cands.results[:k]]
            dropped = cands.dropped
        else:
            top = [(c.id, c.itc, c.itc, None) for c in cands[:k]]
        t0 = time.perf_counter()
        records = (read or RecordReader(self.coll, ran))([rid for rid, *_ in top])
        hits = [Hit(rid, score, itc, itm, records[rid]) for rid, score, itc, itm in top if rid in records]
        ran.record_gone += len(top) - len(hits)
        timing["fetch"] = _ms(t0)
        return SearchResult(hits, timing, dropped)


def _stamp(coll: Collection) -> tuple[int, int]:
    st = (coll.root / MANIFEST_NAME).stat()
    return st.st_mtime_ns, st.st_size


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 3)
