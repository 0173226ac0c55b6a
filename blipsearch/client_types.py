"""The typed results and the error of ``blipsearch.client`` (dataclasses; ``raw`` keeps each
whole JSON answer). Imports nothing else of blipsearch."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")


class APIError(Exception):
    """An error answer: ``status`` (HTTP), ``code`` (blipsearch's error code), ``detail``."""

    def __init__(self, status: int, code: str, detail: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail, self.body = status, code, detail, body


def build(cls: type[T], data: dict[str, Any]) -> T:
    """``cls`` from a JSON object: its known fields, the whole object in ``raw``."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in known and k != "raw"}, raw=data)  # type: ignore[call-arg]


@dataclass
class Hit:
    id: int
    score: float
    itc_score: float
    itm_score: float | None = None
    uri: str | None = None
    caption: str | None = None
    text: str | None = None
    external_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class SearchResult:
    collection: str
    results: list[Hit]
    timing_ms: dict[str, float] = field(default_factory=dict)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    partial: bool = False
    missing_shards: list[int] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ids(self) -> list[int]:
        return [h.id for h in self.results]


@dataclass
class Embeddings:
    model: str
    dim: int
    vectors_per_item: int
    embeddings: list[Any]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class CollectionInfo:
    name: str
    kind: str
    count: int
    model_id: str
    dim: int
    vectors_per_item: int = 1
    index: str | None = None
    created_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Upload:
    collection: str
    ids: list[int]
    added: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Job:
    id: str
    kind: str
    collection: str
    state: str
    counts: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    model_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled", "interrupted")


@dataclass
class ModerationCheck:
    policy: str
    version: Any
    decision: str
    categories: list[dict[str, Any]] = field(default_factory=list)
    triggers: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
