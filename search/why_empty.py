"""Why a search returned nothing, in words the CLI and the API (and so the page) share.

``empty_reason`` is pure: it reads what an executed plan recorded (``SearchResult.explain``:
the plan's filters, allowed records and cut-off; what ran and why results are missing) and,
where known, the best score the cut-off removed. ``describe_empty`` gathers that for a result:
it refuses ``fields`` filters naming no column or metadata key of the collection (they could only
ever match nothing), and re-runs a plan without its ``min_score`` to find the best score.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from blipsearch.errors import InvalidInputError
from search.filters import Filters
from storage.reading import shard_meta

if TYPE_CHECKING:
    from rerank.base import Reranker
    from search.engine import SearchEngine
    from search.plan import QueryPlan
    from search.results import SearchResult
    from storage.collection import Collection

# Filter keys as the CLI spells them (style "cli"); the API names the filter fields themselves.
_FLAGS = {
    "uri_prefix": "--uri-prefix",
    "added_after": "--added-after",
    "added_before": "--added-before",
    "min_width": "--min-width",
    "max_width": "--max-width",
    "min_height": "--min-height",
    "max_height": "--max-height",
}
# Columns that exist but are not filterable by value.
_NOT_FILTERABLE = ("embedding", "metadata")


def _value(v: Any) -> str:
    return ",".join(str(x) for x in v) if isinstance(v, list) else str(v)


def describe_filters(filters: dict[str, Any] | None, style: str = "cli") -> str:
    """The filters in effect, as flags (``--where format=PNG --min-width 5000``) or, for the API,
    as field names (``fields.format=PNG, min_width=5000``)."""
    parts: list[str] = []
    for key, value in (filters or {}).items():
        if key == "fields":
            for name, want in value.items():
                parts.append(f"--where {name}={_value(want)}" if style == "cli" else f"fields.{name}={_value(want)}")
        elif key == "exclude_decisions":
            parts.append(f"exclude_decisions={_value(value)}")
        elif style == "cli" and key in _FLAGS:
            parts.append(f"{_FLAGS[key]} {value}")
        else:
            parts.append(f"{key}={value}")
    return (" " if style == "cli" else ", ").join(parts)


def _score(v: float) -> str:
    return f"{v:.3g}" if abs(v) >= 0.001 else f"{v:.2e}"


def empty_reason(explain: dict[str, Any] | None, *, best_score: float | None = None, style: str = "cli") -> str:
    """One sentence saying why an executed query returned no results (``explain``: the result's
    ``explain``; ``best_score``: the best score the ``min_score`` cut-off removed, if known)."""
    if not explain:
        return "no results"
    plan, ran = explain["plan"], explain["ran"]
    missing = ran.get("missing", {})
    vectors = int(plan.get("index", {}).get("vectors") or 0)
    filters = plan.get("filters")
    hidden = int(missing.get("hidden_by_moderation") or 0) + int(plan.get("excluded_records") or 0)
    if vectors == 0 or (not filters and not hidden and not ran.get("shortlist") and plan.get("mode") == "vector"):
        return "the collection is empty"
    if filters and plan.get("allowed_records") == 0:
        said = describe_filters(filters, style)
        if int(missing.get("filtered_out") or 0) < vectors and hidden:
            return f"the records matching {said} are all hidden by moderation"
        return f"no record matches {said}"
    if hidden and not ran.get("shortlist"):
        return f"every record is hidden by moderation ({hidden} hidden)"
    cut = plan.get("min_score")
    if cut is not None and missing.get("below_min_score"):
        flag = "--min-score" if style == "cli" else "min_score"
        kind = "ITM probability" if plan.get("rerank") else "ITC score"
        best = f" (best {kind} was {_score(best_score)})" if best_score is not None else ""
        return f"no result clears {flag} {cut:g}{best}"
    if plan.get("mode") in ("keyword", "hybrid") and not ran.get("shortlist"):
        fields = {"ocr": "text read from the images", "captions": "captions"}.get(plan.get("target") or "", "text")
        return f"no record's {fields} contains the query's words (mode {plan['mode']})"
    if plan.get("query") == "captions" and ran.get("shortlist"):
        return "no record near the image has a caption (index with --captions, or run `blipsearch caption -c NAME`)"
    lost = int(missing.get("unreadable") or 0) + int(missing.get("record_gone") or 0)
    if lost:
        return f"the {lost} matching records could not be read (unreadable, or deleted meanwhile)"
    if missing.get("missing_shards"):
        shards = ", ".join(str(s) for s in missing["missing_shards"])
        return f"index shards {shards} did not answer in time"
    return "no results"


def known_fields(coll: Collection) -> set[str]:
    """The fields ``fields`` filters can name: the collection's stored columns and the keys of its
    records' JSON metadata."""
    names: set[str] = set()
    for shard in coll.manifest.shards:
        meta = shard_meta(coll, shard)
        names.update(c for c in meta.column_names if c not in _NOT_FILTERABLE)
        if "metadata" in meta.column_names:
            for raw in meta.column("metadata").to_pylist():
                if raw:
                    names.update(json.loads(raw))
    return names


def check_fields(coll: Collection, filters: Filters | None) -> None:
    """Refuse ``fields`` filters naming neither a column nor a metadata key of ``coll``."""
    if filters is None or not filters.fields:
        return
    known = known_fields(coll)
    unknown = [name for name in filters.fields if name not in known]
    if unknown and coll.manifest.count:
        raise InvalidInputError(
            f"Unknown filter field {unknown[0]!r} in {coll.name!r}: it has no such column or metadata key "
            f"(known: {', '.join(sorted(known))})."
        )


def best_without_cutoff(engine: SearchEngine, plan: QueryPlan, reranker: Reranker | None = None) -> float | None:
    """The best score ``plan`` reaches without its ``min_score``: the ITM probability where re-ranked, else ITC."""
    if plan.options is None or plan.options.min_score is None:
        return None
    again = engine.execute(replace(plan, options=replace(plan.options, min_score=None)), reranker)
    scores = [h.itm_score if h.itm_score is not None else h.itc_score for h in again.hits]
    return max(scores) if scores else None


def describe_empty(
    engine: SearchEngine,
    result: SearchResult,
    plan: QueryPlan | None = None,
    reranker: Reranker | None = None,
    style: str = "cli",
) -> str | None:
    """Why ``result`` is empty (None when it is not); unknown ``fields`` filters are refused."""
    if result.hits:
        return None
    if plan is not None and plan.options is not None:
        check_fields(engine.coll, plan.options.filters)
    ran = (result.explain or {}).get("ran", {}).get("missing", {})
    best = best_without_cutoff(engine, plan, reranker) if plan is not None and ran.get("below_min_score") else None
    return empty_reason(result.explain, best_score=best, style=style)
