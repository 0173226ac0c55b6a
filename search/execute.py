"""Running a query plan (search/plan.py), one function per query kind.

Each record is read at most once (``RecordReader``: the records the re-rank reads serve its
hits too, and only the records a step needs are read), and each candidate's ITC score is
computed once: the index's scores are reused when exact, and only the candidates without one
(keyword hits; compressed codes without refine) are scored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from models.base import Embedder
from rerank.base import Candidate, Reranker, RerankOutcome
from rerank.fusion import rrf
from search.index_base import SearchIndex
from search.plan import QueryPlan, Ran, Selection
from search.query import score
from search.query.parts import Part, rerank_text
from search.results import Hit, SearchResult
from storage.collection import Collection
from storage.fulltext import KeywordIndex


class SearchEngine(Protocol):
    """What running a plan uses of ``search.engine.SearchEngine``."""

    coll: Collection
    embedder: Embedder
    index: SearchIndex
    keyword: KeywordIndex | None
    encode_text: Callable[[str], np.ndarray]

    def part_vectors(self, part: Part) -> np.ndarray: ...

    def shortlist(
        self, query: np.ndarray, n: int, timing: dict[str, float], sel: Selection | None = None
    ) -> tuple[list[Candidate], tuple[int, ...]]: ...

    def hits(
        self,
        cands: list[Candidate] | RerankOutcome,
        k: int,
        timing: dict[str, float],
        ran: Ran,
        read: RecordReader | None = None,
    ) -> SearchResult: ...


class RecordReader:
    """The records one query reads: each at most once, and only those asked for."""

    def __init__(self, coll: Collection, ran: Ran) -> None:
        self.coll, self.ran = coll, ran
        self._asked: set[int] = set()
        self._got: dict[int, dict[str, Any]] = {}

    def __call__(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        new = list(dict.fromkeys(int(i) for i in ids if int(i) not in self._asked))
        if new:
            self.ran.records_read += len(new)
            self._asked.update(new)
            self._got.update(self.coll.get_records(new))
        return {int(i): self._got[int(i)] for i in ids if int(i) in self._got}


def run(engine: SearchEngine, plan: QueryPlan, reranker: Reranker | None, ran: Ran) -> SearchResult:
    runner = {"text": _text, "image": _image, "similar": _similar, "captions": _captions, "parts": _parts}[plan.query]
    return runner(engine, plan, reranker, ran)


def _parts(engine: SearchEngine, plan: QueryPlan, reranker: Reranker | None, ran: Ran) -> SearchResult:
    """A weighted query: encode each part, rank by the documented score (search/query/score.py),
    then ITM re-ranks with the positive text parts when the plan says so."""
    parts = plan.payload
    single = plan.score == score.SINGLE_RULE
    enc = score.encode(parts, engine.index.dim, single, engine.part_vectors)
    timing = dict(enc.timing_ms)
    _note_selection(plan, timing, ran)
    spent: dict[str, float] = {}

    def shortlist(q: np.ndarray, n: int) -> tuple[list[Candidate], tuple[int, ...]]:
        got = engine.shortlist(q, n, spent, plan.selection)
        timing["search"] = round(timing.get("search", 0.0) + spent["search"], 3)
        return got

    exact_index = plan.index["type"] == "flat" and not engine.index.compressed
    ranked = score.rank(enc, engine.index, shortlist, plan.depth, exact_index)
    ran.shortlist, ran.itc_scored = max(ranked.shortlisted, len(ranked.cands)), ranked.shortlisted
    ran.score_rounds, ran.score_exact = ranked.rounds, ranked.exact
    if plan.rerank is None or reranker is None:
        return _with_missing(engine.hits(ranked.cands, plan.k, timing, ran), ranked.missing)
    read = RecordReader(engine.coll, ran)
    outcome = reranker.rerank_images(rerank_text(parts), ranked.cands[: plan.rerank.depth], plan.rerank.fusion, read)
    ran.itm_scored = len(outcome.results)
    ran.unreadable = len(outcome.dropped)
    return _with_missing(engine.hits(outcome, plan.k, timing, ran, read), ranked.missing)


def _text(engine: SearchEngine, plan: QueryPlan, reranker: Reranker | None, ran: Ran) -> SearchResult:
    t0 = time.perf_counter()
    q = engine.encode_text(plan.payload)
    timing = {"encode": _ms(t0)}
    _note_selection(plan, timing, ran)
    known: dict[int, float] = {}  # candidates whose exact ITC score the index search gave
    if plan.mode == "vector":
        cands, missing = engine.shortlist(q, plan.depth, timing, plan.selection)
        ran.shortlist = len(cands)
        if plan.index["exact_scores"]:
            known = {c.id: c.itc for c in cands}
    else:
        cands, known, missing = _keyword_or_hybrid(engine, plan, q, timing, ran)
    if plan.rerank is None or reranker is None:
        return _with_missing(engine.hits(cands, plan.k, timing, ran), missing)
    # Re-rank by ITM; ITC must be the true cosine for every candidate (keyword hits too).
    shortlist = cands[: plan.rerank.depth]
    unknown = [c.id for c in shortlist if c.id not in known]
    if unknown:
        ran.itc_scored += len(unknown)
        known.update(zip(unknown, map(float, engine.index.item_scores(q, np.array(unknown, np.int64))), strict=True))
    shortlist = [Candidate(c.id, known[c.id]) for c in shortlist]
    read = RecordReader(engine.coll, ran)  # the token source reads the records it decodes; hits the rest
    outcome = reranker.rerank_images(plan.payload, shortlist, plan.rerank.fusion, read)
    ran.itm_scored = len(outcome.results)
    ran.unreadable = len(outcome.dropped)
    return _with_missing(engine.hits(outcome, plan.k, timing, ran, read), missing)


def _keyword_or_hybrid(
    engine: SearchEngine, plan: QueryPlan, q: np.ndarray, timing: dict[str, float], ran: Ran
) -> tuple[list[Candidate], dict[int, float], tuple[int, ...]]:
    from blipsearch.errors import InvalidInputError
    from search.limits import MAX_K

    if engine.keyword is None:
        raise InvalidInputError("Keyword search is not available (no catalog connection).")
    sel, depth = plan.selection, int(plan.keyword_depth or plan.depth)
    t0 = time.perf_counter()
    kw = engine.keyword.search(
        engine.coll, plan.payload, MAX_K if sel is not None and sel.restricts else depth, plan.target or "all"
    )
    if sel is not None:  # keyword hits obey the same selection (tombstones leave the keyword index itself)
        if sel.allowed is not None:
            keep = set(sel.allowed.tolist())
            kw = [(rid, score) for rid, score in kw if rid in keep]
        elif sel.excluded is not None:
            drop = set(sel.excluded.tolist())
            kw = [(rid, score) for rid, score in kw if rid not in drop]
    kw = kw[:depth]
    timing["keyword"] = _ms(t0)
    if plan.mode == "keyword":
        ran.shortlist = len(kw)
        return [Candidate(rid, score) for rid, score in kw], {}, ()
    vec, missing = engine.shortlist(q, depth, timing, sel)
    ran.shortlist = len(vec) + len(kw)
    known = {c.id: c.itc for c in vec} if plan.index["exact_scores"] else {}
    fused = rrf([[c.id for c in vec], [rid for rid, _ in kw]], int(plan.rrf_k or 0))
    return [Candidate(rid, score) for rid, score in fused[:depth]], known, missing


def _image(engine: SearchEngine, plan: QueryPlan, reranker: Reranker | None, ran: Ran) -> SearchResult:
    t0 = time.perf_counter()
    pixels = engine.embedder.preprocess([plan.payload])
    reranking = plan.rerank is not None and reranker is not None
    if reranking:
        assert reranker is not None
        q, tokens = reranker.image_query(engine.embedder, plan.payload, pixels)
    else:
        q = engine.embedder.embed_pixels(pixels)[0]
    timing = {"encode": _ms(t0)}
    _note_selection(plan, timing, ran)
    cands, missing = engine.shortlist(q, plan.depth, timing, plan.selection)
    ran.shortlist = len(cands)
    if not reranking or plan.rerank is None or reranker is None:
        return _with_missing(engine.hits(cands, plan.k, timing, ran), missing)
    read = RecordReader(engine.coll, ran)
    texts = {rid: r["text"] for rid, r in read([c.id for c in cands]).items()}
    outcome = reranker.rerank_texts(tokens[:1], texts, cands, plan.rerank.fusion)
    ran.itm_scored = len(outcome.results)
    ran.unreadable = len(outcome.dropped)
    return _with_missing(engine.hits(outcome, plan.k, timing, ran, read), missing)


def _similar(engine: SearchEngine, plan: QueryPlan, reranker: Reranker | None, ran: Ran) -> SearchResult:
    rid = int(plan.payload)
    t0 = time.perf_counter()
    q = engine.index.vectors_of(rid)
    timing = {"encode": _ms(t0)}
    _note_selection(plan, timing, ran)
    cands, missing = engine.shortlist(q, plan.depth, timing, plan.selection)
    ran.shortlist = len(cands)
    cands = [c for c in cands if c.id != rid][: plan.k]
    return _with_missing(engine.hits(cands, plan.k, timing, ran), missing)


def _captions(engine: SearchEngine, plan: QueryPlan, reranker: Reranker | None, ran: Ran) -> SearchResult:
    """The captions of the nearest images, de-duplicated; deeper passes until k are found."""
    from search.limits import MAX_K

    t0 = time.perf_counter()
    q = engine.embedder.embed_images([plan.payload])[0]
    timing = {"encode": _ms(t0)}
    _note_selection(plan, timing, ran)
    depth, k = plan.depth, plan.k
    while True:
        cands, missing = engine.shortlist(q, depth, timing, plan.selection)
        ran.shortlist = len(cands)
        records = RecordReader(engine.coll, ran)([c.id for c in cands])
        seen: set[str] = set()
        hits: list[Hit] = []
        for c in cands:
            cap = (records.get(c.id) or {}).get("caption")
            if cap and cap.strip().lower() not in seen:
                seen.add(cap.strip().lower())
                hits.append(Hit(c.id, c.itc, c.itc, None, records[c.id]))
        if len(hits) >= k or len(cands) < depth or depth >= MAX_K:
            return _with_missing(SearchResult(hits[:k], timing), missing)
        depth = min(MAX_K, depth * 4)


def _note_selection(plan: QueryPlan, timing: dict[str, Any], ran: Ran) -> None:
    sel = plan.selection
    if sel is not None:
        timing["filter"] = sel.ms
        ran.filtered_out, ran.hidden_by_moderation = sel.filtered_out, sel.hidden


def _with_missing(result: SearchResult, missing: tuple[int, ...]) -> SearchResult:
    result.missing_shards = tuple(sorted(set(missing)))
    return result


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 3)
