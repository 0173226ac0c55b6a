"""A query plan: what one query will do, decided once before anything runs.

``SearchEngine.plan_*`` builds a ``QueryPlan`` (what to encode, which records the filters and
moderation decisions leave, the shortlist depth, whether and how ITM re-ranks, the fusion);
``SearchEngine.execute`` runs it once. The plan is a value: ``to_dict()`` is what
``search --explain`` prints and the API's ``explain: true`` returns, together with what ran
(``Ran``: how deep, how many records were read, ITC and ITM scores computed) and why results are
missing (filtered, hidden by moderation, below ``min_score``, unreadable, shards left out).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from search.filters import allowed_ids
from search.index_base import SearchIndex
from search.results import QueryOptions
from storage.collection import Collection
from storage.stacks import hidden_ids


@dataclass
class Selection:
    """Record ids a search may return (``allowed``) or must not (``excluded``)."""

    allowed: np.ndarray | None
    excluded: np.ndarray | None
    params: Any = None  # per-call FAISS SearchParameters (nprobe / efSearch)
    refine_k: int | None = None  # per-call exact re-rank depth (None: the index's default)
    filtered_out: int = 0  # records the column filters leave out
    hidden: int = 0  # records hidden by their moderation decision
    ms: float = 0.0  # time taken to select

    @property
    def restricts(self) -> bool:
        return self.allowed is not None or self.excluded is not None


@dataclass(frozen=True)
class RerankStep:
    """ITM re-ranking of the ITC shortlist: which model, how deep, how scores fuse."""

    model: str  # the ITM checkpoint
    own_model: bool  # the engine's own re-ranker (else one named per call: rerank_model)
    fusion: str
    depth: int  # candidates the ITM head scores
    tokens: str  # where the ITM head's image tokens come from


@dataclass(frozen=True)
class QueryPlan:
    """What one query will do (see the module docstring). ``payload`` is the query itself."""

    query: str  # text | image | similar | captions | parts (a weighted query: search/query/)
    collection: str
    collection_kind: str  # images | texts
    mode: str  # vector | keyword | hybrid
    k: int
    depth: int  # the ITC shortlist's depth (cut to k after any re-rank)
    encode: str  # what produces the query vector
    index: dict[str, Any]
    selection: Selection | None
    rerank: RerankStep | None = None
    keyword_depth: int | None = None
    rrf_k: int | None = None
    target: str | None = None  # keyword and hybrid: the text fields searched (all, ocr, captions)
    score: str | None = None  # weighted queries: the score's rule (search/query/score.py)
    options: QueryOptions | None = field(default=None, repr=False)
    payload: Any = field(default=None, repr=False)
    reranker: Any = field(default=None, repr=False)

    @property
    def rerank_cost(self) -> int:
        """Candidates the ITM head will score (0 without re-ranking)."""
        return self.rerank.depth if self.rerank is not None else 0

    def to_dict(self) -> dict[str, Any]:
        o = self.options
        f = o.filters if o is not None else None
        sel = self.selection
        out: dict[str, Any] = {
            "query": self.query,
            "collection": self.collection,
            "collection_kind": self.collection_kind,
            "mode": self.mode,
            "k": self.k,
            "shortlist_depth": self.depth,
            "encode": self.encode,
            "index": self.index,
            "filters": f.model_dump(exclude_defaults=True, mode="json") if f is not None and not f.is_empty() else None,
            "allowed_records": len(sel.allowed) if sel is not None and sel.allowed is not None else None,
            "excluded_records": len(sel.excluded) if sel is not None and sel.excluded is not None else 0,
            "include_blocked": bool(o is not None and o.include_blocked),
            "rerank": asdict(self.rerank) if self.rerank is not None else None,
            "fusion": self.rerank.fusion if self.rerank is not None else "itc",
            "min_score": o.min_score if o is not None else None,
            "sort": o.sort if o is not None else "relevance",
        }
        if self.keyword_depth is not None:
            out["keyword_depth"] = self.keyword_depth
        if self.rrf_k is not None:
            out["rrf_k"] = self.rrf_k
        if self.target is not None:
            out["target"] = self.target
        if self.query == "parts":
            out["parts"] = [p.describe() for p in self.payload]
            out["score"] = self.score
        elif self.query == "text":
            out["parts"] = [{"kind": "text", "weight": 1.0, "text": self.payload}]
        return out


@dataclass
class Ran:
    """What an executed plan did, and why results are missing."""

    shortlist: int = 0  # candidates the index (and keyword index) returned
    itc_scored: int = 0  # candidates whose ITC score was computed outside the index search
    itm_scored: int = 0
    records_read: int = 0
    returned: int = 0
    filtered_out: int = 0
    hidden_by_moderation: int = 0
    below_min_score: int = 0
    unreadable: int = 0  # re-rank candidates whose image or text could not be read
    record_gone: int = 0  # deleted between the search and the record read
    missing_shards: list[int] = field(default_factory=list)
    score_rounds: int = 0  # weighted queries: shortlist passes until the top was proven (search/query/score.py)
    score_exact: bool | None = None  # weighted queries: the ranking is the brute force of the score

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        missing = {
            key: d.pop(key)
            for key in (
                "filtered_out",
                "hidden_by_moderation",
                "below_min_score",
                "unreadable",
                "record_gone",
                "missing_shards",
            )
        }
        return {**d, "missing": missing}


def select(
    coll: Collection,
    index: SearchIndex,
    decisions: Callable[[set[str]], np.ndarray] | None,
    options: QueryOptions | None,
) -> Selection | None:
    """Which records a query may return: column filters (allowed ids) and moderation
    decisions (excluded ids; ``block`` unless ``include_blocked``), applied inside FAISS."""
    t0 = time.perf_counter()
    f = options.filters if options is not None else None
    hide: set[str] = set(f.exclude_decisions) if f is not None else set()
    if not (options is not None and options.include_blocked):
        hide.add("block")
    excluded = decisions(hide) if decisions is not None and hide else None
    stacked = hidden_ids(coll)  # stacked duplicates (storage/stacks.py): search shows their keeper only
    if stacked is not None:
        excluded = stacked if excluded is None else np.union1d(excluded, stacked)
    if excluded is not None and not len(excluded):
        excluded = None
    hidden = len(excluded) if excluded is not None else 0
    allowed = allowed_ids(coll, f) if f is not None and not f.is_empty() else None
    filtered_out = max(0, coll.manifest.count - len(allowed)) if allowed is not None else 0
    if allowed is not None and excluded is not None:
        kept = np.setdiff1d(allowed, excluded)
        allowed, excluded, hidden = kept, None, int(len(allowed) - len(kept))
    tuned = options is not None and (options.nprobe is not None or options.ef_search is not None)
    params = index.make_params(options.nprobe, options.ef_search) if tuned and options else None
    refine_k = options.refine_k if options is not None else None
    if refine_k is not None:
        index.refine_depth(1, refine_k)  # a bad value is bad input even where refine does not apply
    if allowed is None and excluded is None and params is None and refine_k is None:
        return None
    return Selection(
        allowed, excluded, params, refine_k, filtered_out, hidden, round((time.perf_counter() - t0) * 1e3, 3)
    )


def selected_ids(coll: Collection, sel: Selection | None) -> np.ndarray:
    """Every record id a query under ``sel`` may return (sorted int64): brute force's universe."""
    from search.filters import Filters

    if sel is not None and sel.allowed is not None:
        return np.asarray(sel.allowed, np.int64)
    ids = allowed_ids(coll, Filters())
    if sel is not None and sel.excluded is not None:
        ids = np.setdiff1d(ids, np.asarray(sel.excluded, np.int64))
    return ids


def describe_index(ix: SearchIndex, sel: Selection | None, depth: int) -> dict[str, Any]:
    """The index a plan searches: spec, type, size, the per-query knob in effect (tuned default
    or per call), the refine depth, and whether its scores are the exact ITC cosines."""
    refine = sel.refine_k if sel is not None else None
    out: dict[str, Any] = {"spec": ix.spec, "type": ix.kind, "vectors": ix.ntotal}
    params = sel.params if sel is not None and sel.params is not None else ix.make_params()
    for knob in ("nprobe", "efSearch"):
        if params is not None and hasattr(params, knob):
            out[knob] = int(getattr(params, knob))
    if ix.compressed:
        out["refine_depth"] = ix.refine_depth(depth, refine)
    out["exact_scores"] = ix.exact_scores(depth, refine)
    return out


def explain(plan: QueryPlan, ran: Ran) -> dict[str, Any]:
    """The plan and what ran (the ``explain`` of a search response)."""
    return {"plan": plan.to_dict(), "ran": ran.to_dict()}


def format_explain(ex: dict[str, Any]) -> str:
    """The explain value as lines for a terminal (``search --explain``)."""
    p, r = ex["plan"], ex["ran"]
    lines = [
        f"plan: {p['query']} query on {p['collection']} ({p['collection_kind']}), mode {p['mode']}, k {p['k']}",
        f"  encode: {p['encode']}",
    ]
    for part in p.get("parts", ()):
        what = part.get("text", part.get("id", part.get("source", "")))
        lines.append(f"  part: {part['weight']:+g} x {part['kind']} {what!r}")
    if p.get("score"):
        lines.append(f"  score: {p['score']}")
    lines += [
        "  index: " + ", ".join(f"{key} {value}" for key, value in p["index"].items()),
        f"  shortlist depth: {p['shortlist_depth']}"
        + (f", keyword depth {p['keyword_depth']}, rrf_k {p['rrf_k']}" if "keyword_depth" in p else ""),
    ]
    if p["filters"] is not None:
        lines.append(f"  filters: {p['filters']} ({p['allowed_records']} records allowed)")
    lines.append(
        f"  moderation: {p['excluded_records']} records hidden" + (" (blocked shown)" if p["include_blocked"] else "")
    )
    rr = p["rerank"]
    if rr is None:
        lines.append("  re-rank: none (ITC order)")
    else:
        lines.append(f"  re-rank: {rr['model']}, top {rr['depth']}, fusion {rr['fusion']}")
        lines.append(f"    image tokens: {rr['tokens']}")
    if p["min_score"] is not None or p["sort"] != "relevance":
        lines.append(f"  then: min_score {p['min_score']}, sort {p['sort']}")
    m = r["missing"]
    lines.append(
        f"ran: shortlist {r['shortlist']}, ITC scored {r['itc_scored']} more, ITM scored {r['itm_scored']}, "
        f"records read {r['records_read']}, returned {r['returned']}"
    )
    why = [f"{key.replace('_', ' ')} {value}" for key, value in m.items() if value]
    lines.append("missing: " + (", ".join(why) if why else "nothing"))
    return "\n".join(lines)
