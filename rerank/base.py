"""The re-ranker interface and its result types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


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

    def shares_vision_with(self, embedder: Any) -> bool:
        """Whether the collection model's vision tokens are this re-ranker's (same checkpoint)."""
        return True

    def query_tokens(self, image: Any) -> Any:
        """A query image's tokens from the re-ranker's own vision encoder (cross-family re-ranking)."""
        raise NotImplementedError

    @abstractmethod
    def rerank_images(self, text: str, candidates: Sequence[Candidate], fusion: str) -> RerankOutcome:
        """Text → image: one text against candidate images (by record id)."""

    @abstractmethod
    def rerank_texts(
        self, image_tokens: Any, texts: Mapping[int, str], candidates: Sequence[Candidate], fusion: str
    ) -> RerankOutcome:
        """Image → text: one image (its vision tokens) against candidate texts."""
