"""Policy screening: ITC cosine of the image with every category prompt; categories whose best
prompt's screen score ``(1 + cosine) / 2`` reaches ``itc_threshold`` are confirmed by the ITM
head over their prompts (one shared K/V pass for all of them); a category is hit when its best
ITM match probability reaches ``itm_threshold``. Without an ITM model the screen decides
(ITC-only; ``itm`` stays null)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.base import Embedder
from moderation.kinds.itm import Itm, ms, screen_score
from moderation.policy import Policy


@dataclass
class CategoryScore:
    name: str
    action: str
    itc: float  # best prompt's ITC cosine
    itc_prompt: str
    screened: bool  # screen_score(itc) >= itc_threshold: sent to ITM
    itm: float | None = None  # best prompt's ITM match probability
    itm_prompt: str | None = None
    hit: bool = False
    vqa: float | None = None  # best question's P(yes) / (P(yes) + P(no))
    vqa_question: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """As reported (CLI JSON, API, stored results): ``itc`` on the scale ``itc_threshold`` is
        compared with, the screen score (1 + cosine) / 2; ``itc_cosine`` the raw cosine."""
        out = dict(vars(self))
        out["itc"], out["itc_cosine"] = float(screen_score(self.itc)), self.itc
        return out


class PromptScreen:
    def __init__(self, policy: Policy, embedder: Embedder | None, itm: Itm) -> None:
        self.categories = policy.categories
        self.itm = itm
        self.prompts = [p for c in policy.categories for p in c.prompts]
        self.owner = np.array([i for i, c in enumerate(policy.categories) for _ in c.prompts])
        dim = embedder.dim if embedder is not None else 1
        # [P, d], once per policy
        self.prompt_emb = (
            embedder.embed_texts(self.prompts)
            if embedder is not None and self.prompts
            else np.zeros((0, dim), np.float32)
        )

    def score(
        self, tokens: Any, vecs: np.ndarray, screen: bool, timing: dict[str, float]
    ) -> tuple[list[CategoryScore], list[dict[str, Any]]]:
        """Category scores and hits of one image: ``vecs`` [q, d] (BLIP-2: max over query vectors)."""
        t0 = time.perf_counter()
        itc = (vecs @ self.prompt_emb.T).max(axis=0)  # [P]
        cats: list[CategoryScore] = []
        confirm: list[int] = []  # prompt indexes sent to ITM
        for ci, cat in enumerate(self.categories):
            idx = np.flatnonzero(self.owner == ci)
            best = int(idx[np.argmax(itc[idx])])
            screened = bool(screen_score(itc[best]) >= cat.itc_threshold)
            cats.append(CategoryScore(cat.name, cat.action, float(itc[best]), self.prompts[best], screened))
            if (screened and cat.itm_threshold is not None) or not screen:
                confirm.extend(idx.tolist())
        timing["itc"] = ms(t0)
        triggers: list[dict[str, Any]] = []
        if confirm and self.itm.scorer is None:  # ITC-only: the screen decides
            for cat, score in zip(self.categories, cats, strict=True):
                if cat.itm_threshold is None:  # a questions-only category: its questions decide
                    continue
                score.hit = score.screened
                if score.hit:
                    triggers.append(
                        {"check": "policy", "category": cat.name, "prompt": score.itc_prompt,
                         "score": float(screen_score(score.itc)), "threshold": cat.itc_threshold,
                         "action": cat.action, "stage": "itc"}
                    )  # fmt: skip
        elif confirm:
            t1 = time.perf_counter()
            probs = self.itm.probs(tokens, [self.prompts[j] for j in confirm])
            timing["itm"] = ms(t1)
            by_prompt = dict(zip(confirm, probs.tolist(), strict=True))
            for ci, (cat, score) in enumerate(zip(self.categories, cats, strict=True)):
                mine: list[int] = np.flatnonzero(self.owner == ci).tolist()
                if mine[0] not in by_prompt:
                    continue
                top = max(mine, key=by_prompt.__getitem__)
                score.itm, score.itm_prompt = float(by_prompt[top]), self.prompts[top]
                if cat.itm_threshold is None:
                    continue
                score.hit = score.screened and score.itm >= cat.itm_threshold
                if score.hit:
                    triggers.append(
                        {"check": "policy", "category": cat.name, "prompt": score.itm_prompt, "score": score.itm,
                         "threshold": cat.itm_threshold, "action": cat.action}
                    )  # fmt: skip
        return cats, triggers
