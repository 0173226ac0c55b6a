"""Query a collection: encode the query, exact ITC top-k, optional ITM re-rank, attach records.

Image collections answer text→image and image→image; text collections answer image→text.
ITM re-ranking follows the BLIP protocol: an ITC shortlist of ``rerank_k``, re-scored by the
ITM head, fused (rerank/fusion/), then cut to ``k``. Image→image has no ITM; it stays ITC.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

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
from rerank.fusion import RRF_K, check_fusion, rrf
from search import index_store
from search.filters import allowed_ids
from search.results import Hit, QueryOptions, SearchResult, Selection, finish
from search.sharded import missing_shards, reset_missing
from search.vector_index import VectorIndex
from storage.collection import Collection
from storage.fulltext import KeywordIndex
from storage.manifest import MANIFEST_NAME

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)
MAX_K = 1000
MAX_RERANK_K = 1024
MODES = ("vector", "keyword", "hybrid")
HYBRID_DEPTH = 100  # each list contributes its top 100 to the fusion
IndexLoader = Callable[[Collection], VectorIndex]
_F = TypeVar("_F", bound=Callable[..., SearchResult])


def _tracks_shards(method: _F) -> _F:
    """Report, on the result, the index shards a partial sharded search left out."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> SearchResult:
        reset_missing()
        result = method(*args, **kwargs)
        result.missing_shards = missing_shards()
        return result

    return wrapper  # type: ignore[return-value]


class SearchEngine:
    def __init__(
        self,
        collection: Collection,
        embedder: Embedder,
        index: VectorIndex,
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

    # -- queries ------------------------------------------------------------------------
    @_tracks_shards
    def search_text(
        self,
        text: str,
        k: int = 10,
        *,
        rerank: bool = False,
        rerank_k: int = 64,
        fusion: str = "itm+itc",
        mode: str = "vector",
        rrf_k: int = RRF_K,
        options: QueryOptions | None = None,
        reranker: Reranker | None = None,
        target: str = "all",
    ) -> SearchResult:
        """Text → image (image collections only): ``mode`` vector (ITC), keyword, or hybrid (RRF).
        ``target`` (keyword and hybrid): the text fields searched, ``all``, ``ocr`` or ``captions``.

        ``reranker`` overrides the engine's own for this call (another model's ITM head)."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("The text query is empty.")
        if self.kind != "images":
            raise InvalidInputError(f"{self.coll.name!r} is a text collection: search it with an image.")
        if mode not in MODES:
            raise InvalidInputError(f"Unknown mode {mode!r}: use one of {', '.join(MODES)}.")
        if target != "all" and mode == "vector":
            raise InvalidInputError(f"target {target!r} searches text fields: use mode keyword or hybrid.")
        self._check(k, rerank_k, fusion)
        t0 = time.perf_counter()
        q = self.encode_text(text)
        timing = {"encode": _ms(t0)}
        depth = max(k, rerank_k) if rerank else k
        sel = self._selection(options, timing)
        if mode == "vector":
            cands = self._shortlist(q, depth, timing, sel)
        else:
            cands = self._keyword_or_hybrid(
                text, q, mode, max(depth, HYBRID_DEPTH if mode == "hybrid" else 0), rrf_k, timing, sel, target
            )
        if not (rerank and fusion != "itc"):
            return finish(self._plain(cands[:k], timing), options)
        # Re-rank by ITM; ITC must be the true cosine for every candidate (keyword hits too).
        itc = self.index.item_scores(q, np.array([c.id for c in cands[:depth]], dtype=np.int64))
        cands = [Candidate(c.id, float(s)) for c, s in zip(cands[:depth], itc, strict=True)]
        outcome = self._reranker(reranker).rerank_images(text, cands, fusion)
        return finish(self._from_outcome(outcome, k, timing), options)

    @_tracks_shards
    def search_image(
        self,
        image: Image.Image,
        k: int = 10,
        *,
        rerank: bool = False,
        rerank_k: int = 64,
        fusion: str = "itm+itc",
        options: QueryOptions | None = None,
        reranker: Reranker | None = None,
    ) -> SearchResult:
        """Image → image on image collections, image → text on text collections."""
        self._check(k, rerank_k, fusion)
        t0 = time.perf_counter()
        pixels = self.embedder.preprocess([image])
        reranking = rerank and fusion != "itc" and self.kind == "texts"
        if reranking and self._reranker(reranker).shares_vision_with(self.embedder):
            # one ViT forward serves both the ITC query and the ITM re-rank
            tokens = self.embedder.vision_tokens(pixels)
            q = self.embedder.embed_tokens(tokens)[0]
        else:
            q = self.embedder.embed_pixels(pixels)[0]
            if reranking:  # another model's ITM head (cross-family): its own vision encoder
                tokens = self._reranker(reranker).query_tokens(image)
        timing = {"encode": _ms(t0)}
        cands = self._shortlist(q, max(k, rerank_k) if reranking else k, timing, self._selection(options, timing))
        if not reranking:
            return finish(self._plain(cands[:k], timing), options)
        records = self.coll.get_records([c.id for c in cands])
        texts = {rid: r["text"] for rid, r in records.items()}
        outcome = self._reranker(reranker).rerank_texts(tokens[:1], texts, cands, fusion)
        return finish(self._from_outcome(outcome, k, timing, records), options)

    @_tracks_shards
    def search_similar(self, rid: int, k: int = 10, options: QueryOptions | None = None) -> SearchResult:
        """ "More like this": nearest records to record ``rid``'s own stored vectors (itself excluded)."""
        self._check(k, 1, "itc")
        if self.coll.locate(int(rid)) is None:
            raise RecordNotFoundError(f"Collection {self.coll.name!r} has no record {rid}.")
        t0 = time.perf_counter()
        q = self.index.vectors_of(int(rid))
        timing = {"encode": _ms(t0)}
        sel = self._selection(options, timing)
        cands = [c for c in self._shortlist(q, min(k + 1, MAX_K), timing, sel) if c.id != rid][:k]
        return finish(self._plain(cands, timing), options)

    def search_vector(self, query: np.ndarray, n: int, options: QueryOptions | None = None) -> list[Candidate]:
        """Top-``n`` (id, ITC score) for a ready query vector ([dim] or [nq, dim]), records not
        fetched; the same selection (filters, hidden decisions) as the other searches."""
        if not isinstance(n, int) or n < 1:
            raise InvalidInputError(f"The number of results must be at least 1, got {n}.")
        timing: dict[str, float] = {}
        return self._shortlist(query, n, timing, self._selection(options, timing))

    @_tracks_shards
    def captions_for_image(self, image: Image.Image, k: int = 10) -> SearchResult:
        """Image → text over captions: the captions of the nearest images, de-duplicated."""
        if self.kind != "images":
            raise InvalidInputError("target=captions searches an image collection's captions.")
        self._check(k, 1, "itc")
        t0 = time.perf_counter()
        q = self.embedder.embed_images([image])[0]
        timing = {"encode": _ms(t0)}
        depth = min(MAX_K, max(5 * k, 50))
        while True:
            cands = self._shortlist(q, depth, timing, self._selection(None, timing))
            records = self.coll.get_records([c.id for c in cands])
            seen: set[str] = set()
            hits: list[Hit] = []
            for c in cands:
                cap = (records.get(c.id) or {}).get("caption")
                if cap and cap.strip().lower() not in seen:
                    seen.add(cap.strip().lower())
                    hits.append(Hit(c.id, c.itc, c.itc, None, records[c.id]))
            if len(hits) >= k or len(cands) < depth or depth >= MAX_K:
                return SearchResult(hits[:k], timing)
            depth = min(MAX_K, depth * 4)

    def _keyword_or_hybrid(
        self,
        text: str,
        q: np.ndarray,
        mode: str,
        depth: int,
        rrf_k: int,
        timing: dict[str, float],
        sel: Selection | None = None,
        target: str = "all",
    ) -> list[Candidate]:
        if self.keyword is None:
            raise InvalidInputError("Keyword search is not available (no catalog connection).")
        t0 = time.perf_counter()
        kw = self.keyword.search(self.coll, text, MAX_K if sel is not None and sel.restricts else depth, target)
        if sel is not None:  # keyword hits obey the same selection (tombstones leave the keyword index itself)
            if sel.allowed is not None:
                keep = set(sel.allowed.tolist())
                kw = [(rid, score) for rid, score in kw if rid in keep]
            elif sel.excluded is not None:
                drop = set(sel.excluded.tolist())
                kw = [(rid, score) for rid, score in kw if rid not in drop]
        kw = kw[:depth]
        timing["keyword"] = _ms(t0)
        if mode == "keyword":
            return [Candidate(rid, score) for rid, score in kw]
        vec = self._shortlist(q, depth, timing, sel)
        fused = rrf([[c.id for c in vec], [rid for rid, _ in kw]], rrf_k)
        return [Candidate(rid, score) for rid, score in fused[:depth]]

    # -- helpers ------------------------------------------------------------------------
    def _reranker(self, override: Reranker | None = None) -> Any:
        if override is not None:
            return override
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

    def _selection(self, options: QueryOptions | None, timing: dict[str, float]) -> Selection | None:
        """Which records a query may return: column filters (allowed ids) and moderation
        decisions (excluded ids; ``block`` unless ``include_blocked``), applied inside FAISS."""
        t0 = time.perf_counter()
        f = options.filters if options is not None else None
        hide: set[str] = set(f.exclude_decisions) if f is not None else set()
        if not (options is not None and options.include_blocked):
            hide.add("block")
        excluded = self.decisions(hide) if self.decisions is not None and hide else None
        if excluded is not None and not len(excluded):
            excluded = None
        allowed = allowed_ids(self.coll, f) if f is not None and not f.is_empty() else None
        if allowed is not None and excluded is not None:
            allowed, excluded = np.setdiff1d(allowed, excluded), None
        tuned = options is not None and (options.nprobe is not None or options.ef_search is not None)
        params = self.index.make_params(options.nprobe, options.ef_search) if tuned and options else None
        refine_k = options.refine_k if options is not None else None
        if refine_k is not None:
            self.index.refine_depth(1, refine_k)  # a bad value is bad input even where refine does not apply
        if allowed is None and excluded is None and params is None and refine_k is None:
            return None
        timing["filter"] = _ms(t0)
        return Selection(allowed, excluded, params, refine_k)

    def _shortlist(
        self, query: np.ndarray, n: int, timing: dict[str, float], sel: Selection | None = None
    ) -> list[Candidate]:
        t0 = time.perf_counter()
        if sel is None:
            ids, scores = self.index.search(query, n)
        else:
            extra = {} if sel.refine_k is None else {"refine_k": sel.refine_k}  # exact re-rank depth
            ids, scores = self.index.search(query, n, sel.params, allowed=sel.allowed, excluded=sel.excluded, **extra)
        timing["search"] = _ms(t0)
        return [Candidate(int(i), float(s)) for i, s in zip(ids, scores, strict=True)]

    def _plain(self, cands: list[Candidate], timing: dict[str, float]) -> SearchResult:
        t0 = time.perf_counter()
        records = self.coll.get_records([c.id for c in cands])
        hits = [Hit(c.id, c.itc, c.itc, None, records[c.id]) for c in cands if c.id in records]
        timing["fetch"] = _ms(t0)
        return SearchResult(hits, timing)

    def _from_outcome(
        self, outcome: RerankOutcome, k: int, timing: dict[str, float], records: dict[int, dict[str, Any]] | None = None
    ) -> SearchResult:
        timing.update({f"rerank_{name}": v for name, v in outcome.timing_ms.items()})
        top = outcome.results[:k]
        t0 = time.perf_counter()
        if records is None:
            records = self.coll.get_records([r.id for r in top])
        hits = [Hit(r.id, r.score, r.itc, r.itm_prob, records[r.id]) for r in top if r.id in records]
        timing["fetch"] = _ms(t0)
        return SearchResult(hits, timing, outcome.dropped)


def _stamp(coll: Collection) -> tuple[int, int]:
    st = (coll.root / MANIFEST_NAME).stat()
    return st.st_mtime_ns, st.st_size


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 3)
