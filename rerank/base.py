"""The re-ranker interface and its result types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RecordRead = Callable[[Sequence[int]], Mapping[int, Mapping[str, Any]]]  # record ids -> those found


@dataclass(frozen=True)
class Candidate:
    """A shortlist entry: record id and its ITC score."""

    id: int
    itc: float


@dataclass
class Reranked:
    id: int
    itc: float
    itm_logit: float  # the match-class logit
    itm_prob: float  # softmax P(match)
    score: float  # the fused score the list is sorted by


@dataclass
class RerankOutcome:
    results: list[Reranked]
    dropped: list[dict[str, Any]] = field(default_factory=list)  # [{"id", "reason"}]
    timing_ms: dict[str, float] = field(default_factory=dict)


class Reranker(ABC):
    """Re-scores a shortlist. Implementations differ in the model head (BLIP ITM, BLIP-2 ITM)."""

    name: str

    @property
    @abstractmethod
    def model_id(self) -> str:
        """The checkpoint that scores."""

    @abstractmethod
    def image_query(self, embedder: Any, image: Any, pixels: Any) -> tuple[Any, Any]:
        """(the ITC query vector(s) of ``image`` from ``embedder``, its tokens for this head):
        one vision forward when both share a checkpoint, else each model's own."""

    def image_token_source(self, embedder: Any) -> str:
        """Where a query image's tokens come from (what a query plan reports)."""
        return "the ITM model's vision encoder"

    def candidate_token_source(self) -> str:
        """Where candidate images' tokens come from (what a query plan reports)."""
        return "recomputed by the ITM model's vision encoder"

    @abstractmethod
    def rerank_images(
        self,
        text: str,
        candidates: Sequence[Candidate],
        fusion: str,
        read: RecordRead | None = None,
    ) -> RerankOutcome:
        """Text → image: one text against candidate images (by record id; ``read``: how the
        caller's query reads records, each once)."""

    @abstractmethod
    def rerank_texts(
        self, image_tokens: Any, texts: Mapping[int, str], candidates: Sequence[Candidate], fusion: str
    ) -> RerankOutcome:
        """Image → text: one image (its vision tokens) against candidate texts."""
