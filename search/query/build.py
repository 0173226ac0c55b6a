"""One query from what a caller sent: the text read by the parser (or taken raw), an image,
feedback ids, with their weights; and the parser's filters merged into the caller's.

The API, the CLI and the clip-retrieval route all build their queries here, so a text means
the same everywhere."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from blipsearch.errors import InvalidInputError
from search.filters import Filters
from search.plan import QueryPlan
from search.query.parser import Understood, parse, raw
from search.query.parts import Part, check_parts, check_weight, feedback_parts, is_single_text
from search.results import QueryOptions
from storage.collection import Collection


class Planner(Protocol):
    """What ``plan_for`` uses of ``search.engine.SearchEngine`` (which imports this package)."""

    coll: Collection

    @property
    def plan_text(self) -> Callable[..., QueryPlan]: ...
    @property
    def plan_query(self) -> Callable[..., QueryPlan]: ...


@dataclass
class QueryInput:
    """What a request asks for, before parsing."""

    text: str | None = None
    raw: bool = False  # the text is one visual part, nothing parsed
    text_weight: float = 1.0  # multiplies every text part's weight
    image: Any = None  # a decoded PIL image
    image_weight: float = 1.0
    image_source: str = "image"
    positive_ids: list[int] = field(default_factory=list)
    negative_ids: list[int] = field(default_factory=list)
    today: date | None = None  # anchors relative dates (tests pin it)


def understand(q: QueryInput) -> Understood:
    """The parts and filters of ``q`` (``understood`` in answers): the text's, then the image's,
    then the feedback records'."""
    u = raw(q.text or "") if q.raw else parse(q.text or "", q.today)
    tw = check_weight(q.text_weight, "text_weight")
    if tw != 1.0:
        u.parts = [
            Part(p.kind, p.value, check_weight(p.weight * tw, f"{p.source!r} x text_weight"), p.source) for p in u.parts
        ]
    if q.image is not None:
        u.parts.append(Part("image", q.image, check_weight(q.image_weight, "image_weight"), q.image_source))
    elif q.image_weight != 1.0:
        raise InvalidInputError("image_weight is set but the query has no image.")
    u.parts.extend(feedback_parts(q.positive_ids, q.negative_ids))
    return u


def merge_filters(options: QueryOptions | None, u: Understood, coll: Collection) -> QueryOptions:
    """``options`` with the parser's filters added; a filter set both ways to different values
    is refused, and a ``key:value`` on a field the collection does not have is refused."""
    options = options or QueryOptions()
    if not u.filters:
        return options
    check_fields(coll, u.filters.get("fields", {}), u.sources)
    given = options.filters.model_dump(exclude_defaults=True) if options.filters is not None else {}
    merged = dict(given)
    for key, value in u.filters.items():
        if key == "fields":
            fields = dict(merged.get("fields", {}))
            for name, v in value.items():
                if name in fields and fields[name] != v:
                    raise InvalidInputError(
                        f"fields.{name} is set by the query ({v!r}) and by filters ({fields[name]!r})."
                    )
                fields[name] = v
            merged["fields"] = fields
        elif key in merged:
            raise InvalidInputError(
                f"{key} is set by the query ({u.sources.get(key, value)!r}) and by filters: give it once."
            )
        else:
            merged[key] = value
    unknown = [k for k in merged if k not in Filters.model_fields]
    if unknown:
        raise InvalidInputError(
            f"The query's {unknown[0]} filter ({u.sources.get(unknown[0], '')!r}) is not available on this server."
        )
    options.filters = Filters.parse(merged)
    return options


def check_fields(coll: Collection, fields: dict[str, Any], sources: dict[str, str]) -> None:
    """Every ``key:value`` key names a column of the records or a key of their metadata."""
    if not fields or not coll.manifest.shards:
        return
    from storage.metadata_keys import metadata_keys
    from storage.reading import shard_meta

    known = set(shard_meta(coll, coll.manifest.shards[0]).column_names) | set(metadata_keys(coll))
    known -= {"embedding", "metadata"}
    for name in fields:
        if name not in known:
            raise InvalidInputError(
                f"{sources.get(f'fields.{name}', name)!r}: collection {coll.name!r} has no field {name!r} to filter on "
                f"(fields: {', '.join(sorted(known)[:20])}). Quote the words to search for them."
            )


def plan_for(
    engine: Planner,
    u: Understood,
    k: int,
    options: QueryOptions | None,
    *,
    mode: str = "vector",
    target: str = "all",
    rrf_k: int | None = None,
    **rerank: Any,
) -> QueryPlan:
    """The plan of an understood query: a plain text (one text part of weight 1) is the classic
    text query (every mode); anything else is a weighted query (vector mode only).
    ``rerank``: rerank, rerank_k, fusion, reranker, rerank_model."""
    check_parts(u.parts)  # empty, only negative, or too many: refused before anything else
    options = merge_filters(options, u, engine.coll)
    if is_single_text(u.parts):
        extra: dict[str, Any] = {"rrf_k": rrf_k} if rrf_k is not None else {}
        text = str(u.parts[0].value)
        source = u.parts[0].source.strip()
        if mode != "vector" and source.startswith('"') and source.endswith('"') and len(source) > 1:
            text = source  # the keyword index reads a quoted phrase as a phrase (words in that order)
        return engine.plan_text(text, k, mode=mode, target=target, options=options, **extra, **rerank)
    if mode != "vector":
        raise InvalidInputError(
            f"mode {mode} searches one text: this query has {len(u.parts)} parts (weights, negations, images or ids). "
            "Use mode vector, or raw: true (--raw) to search the words as one text."
        )
    return engine.plan_query(u.parts, k, options=options, **rerank)
