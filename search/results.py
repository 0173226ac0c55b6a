"""What a query asks (``QueryOptions``) and gets (``SearchResult`` of ``Hit``s), and the
per-call options applied after ranking (``finish``: ``min_score``, sort order)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from blipsearch.errors import InvalidInputError
from blipsearch.limits import NO_MATCH_THRESHOLD
from search.filters import Filters

IMAGE_FIELDS = ("uri", "caption", "caption_model", "width", "height", "ocr_text")
TEXT_FIELDS = ("external_id", "text")


@dataclass
class Hit:
    id: int
    score: float
    itc_score: float
    itm_score: float | None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def uri(self) -> str | None:
        return self.record.get("uri")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "score": self.score,
            "itc_score": self.itc_score,
            "itm_score": self.itm_score,
        }
        if "text" in self.record:
            out.update({k: self.record.get(k) for k in TEXT_FIELDS})
        else:
            out.update({k: self.record.get(k) for k in IMAGE_FIELDS})
        meta = self.record.get("metadata")
        out["metadata"] = json.loads(meta) if meta else {}
        return out


@dataclass
class SearchResult:
    hits: list[Hit]
    timing_ms: dict[str, float]
    dropped: list[dict[str, Any]] = field(default_factory=list)
    # Index shards that did not answer in time, left out by a sharded index in ``partial`` mode
    # (search/sharded.py): the results are then those of the other shards only.
    missing_shards: tuple[int, ...] = ()
    # The query plan and what ran (search/plan.py: ``explain``), for --explain / explain: true.
    explain: dict[str, Any] | None = None
    # Re-ranked queries: no result's ITM probability reached the threshold (search/query/confidence.py).
    no_confident_match: bool = False


@dataclass
class QueryOptions:
    """Per-call options: filters (inside FAISS), a relevance cut-off, and the result order.

    ``min_score`` applies to the ITM match probability when a result was re-ranked, to the
    ITC score otherwise. ``sort`` is ``relevance`` or ``added_at`` (newest first).
    """

    filters: Filters | None = None
    min_score: float | None = None
    sort: str = "relevance"
    include_blocked: bool = False
    nprobe: int | None = None  # IVF lists probed (approximate indexes; default: the tuned value)
    ef_search: int | None = None  # HNSW search depth (default: the tuned value)
    refine_k: int | None = None  # exact re-rank depth of PQ/SQ indexes (default: the tuned value; 0/1 off)
    no_match_threshold: float = NO_MATCH_THRESHOLD  # ITM P(match) for no_confident_match (re-ranked queries)


def finish(result: SearchResult, options: QueryOptions | None) -> SearchResult:
    if options is None:
        return result
    hits = result.hits
    if options.min_score is not None:
        cut = options.min_score
        hits = [h for h in hits if (h.itm_score if h.itm_score is not None else h.itc_score) >= cut]
    if options.sort == "added_at":
        hits = sorted(
            hits, key=lambda h: (h.record.get("added_at") is not None, h.record.get("added_at")), reverse=True
        )
    elif options.sort != "relevance":
        raise InvalidInputError(f"Unknown sort {options.sort!r}: use relevance or added_at.")
    result.hits = hits
    return result
