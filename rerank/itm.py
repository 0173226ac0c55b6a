"""The ITM re-ranker: BLIP or BLIP-2 ITM head (models/), image tokens from an ImageTokenSource.

The ITM model may be the collection's own (a BLIP / BLIP-2 collection) or another checkpoint
(cross-family re-ranking, ``--rerank-model``): then every image token is computed by the ITM
model's vision encoder from its own preprocessing, never taken from the collection's model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.itm import ItmScorer
from rerank.base import Candidate, RecordRead, Reranked, Reranker, RerankOutcome
from rerank.fusion import check_fusion, fuse
from rerank.image_tokens import ImageTokenSource


def _ranked(cands: Sequence[Candidate], logits: np.ndarray, fusion: str) -> list[Reranked]:
    itc = np.array([c.itc for c in cands], dtype=np.float64)
    score, prob = fuse(itc, logits.astype(np.float64), fusion)
    out = [
        Reranked(c.id, float(c.itc), float(logits[i, 1]), float(prob[i]), float(score[i])) for i, c in enumerate(cands)
    ]
    out.sort(key=lambda r: (-r.score, r.id))
    return out


class ItmReranker(Reranker):
    def __init__(self, scorer: ItmScorer, tokens: ImageTokenSource | None = None) -> None:
        self.scorer = scorer
        self.tokens = tokens
        self.name = f"{scorer.family}-itm"

    @property
    def model_id(self) -> str:
        return self.scorer.model_id

    def shares_vision_with(self, embedder: Any) -> bool:
        """Whether ``embedder``'s vision tokens can be fed to this ITM head (the same checkpoint)."""
        return self.scorer.shares_vision_with(embedder)

    def image_query(self, embedder: Any, image: Any, pixels: Any) -> tuple[Any, Any]:
        """(ITC query vector(s), tokens [1, T, D]): one ViT forward serves both when the
        collection's model is this head's checkpoint; else each model's own encoder."""
        if self.shares_vision_with(embedder):
            tokens = embedder.vision_tokens(pixels)
            return embedder.embed_tokens(tokens)[0], tokens
        return embedder.embed_pixels(pixels)[0], self.scorer.vision_tokens(self.scorer.preprocess([image]))

    def image_token_source(self, embedder: Any) -> str:
        if self.shares_vision_with(embedder):
            return "the query's ITC vision forward (shared)"
        return "the ITM model's vision encoder"

    def candidate_token_source(self) -> str:
        if self.tokens is not None and self.tokens.use_cache:
            return "the ITM feature cache, else recomputed"
        return "recomputed by the ITM model's vision encoder"

    def rerank_images(
        self,
        text: str,
        candidates: Sequence[Candidate],
        fusion: str,
        read: RecordRead | None = None,
    ) -> RerankOutcome:
        check_fusion(fusion)
        if self.tokens is None:
            raise ValueError("rerank_images needs an ImageTokenSource")
        t0 = time.perf_counter()
        kept, tokens, dropped = self.tokens.tokens([c.id for c in candidates], read)
        t1 = time.perf_counter()
        by_id = {c.id: c for c in candidates}
        cands = [by_id[i] for i in kept]
        logits = self.scorer.score_text_vs_images(text, tokens) if tokens is not None else np.zeros((0, 2))
        t2 = time.perf_counter()
        return RerankOutcome(
            _ranked(cands, logits, fusion),
            dropped,
            {"image_tokens": round((t1 - t0) * 1e3, 3), "itm": round((t2 - t1) * 1e3, 3)},
        )

    def rerank_texts(
        self, image_tokens: Any, texts: Mapping[int, str], candidates: Sequence[Candidate], fusion: str
    ) -> RerankOutcome:
        check_fusion(fusion)
        cands = [c for c in candidates if c.id in texts]
        dropped = [{"id": c.id, "reason": "text record not found"} for c in candidates if c.id not in texts]
        t0 = time.perf_counter()
        logits = self.scorer.score_image_vs_texts(image_tokens, [texts[c.id] for c in cands])
        return RerankOutcome(
            _ranked(cands, logits, fusion), dropped, {"itm": round((time.perf_counter() - t0) * 1e3, 3)}
        )
