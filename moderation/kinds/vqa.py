"""Visual questions: a category with ``questions`` also asks them, for the images that pass its
screen, of the policy's InstructBLIP or LLaVA model (models/vqa.py): the best question's
P(yes) / (P(yes) + P(no)) reaching ``vqa_threshold`` is a hit as well (the images are
preprocessed once for all categories, one ``generate`` step per question and batch)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from models.vqa import VisualQuestionScorer
from moderation.policy import Policy

if TYPE_CHECKING:
    from PIL import Image


class VisualQuestions:
    def __init__(self, policy: Policy, vqa: VisualQuestionScorer) -> None:
        self.categories, self.vqa = policy.categories, vqa

    def ask(self, images: list[Image.Image], results: list[Any], screen: bool) -> list[int]:
        """Adds scores and triggers to ``results`` (CheckResults); returns the images asked."""
        t0 = time.perf_counter()
        cats = self.categories
        wanted = {
            ci: [i for i, r in enumerate(results) if r.categories[ci].screened or not screen]
            for ci, cat in enumerate(cats)
            if cat.questions
        }
        needed = sorted({i for rows in wanted.values() for i in rows})
        if not needed:
            return []
        pixels = self.vqa.captioner.preprocess([images[i] for i in needed])  # once for every category
        row_of = {i: r for r, i in enumerate(needed)}
        bs = self.vqa.captioner.batch_size
        for ci, rows in wanted.items():
            cat = cats[ci]
            for start in range(0, len(rows), bs):
                part = rows[start : start + bs]
                scores = self.vqa.score_pixels(pixels[[row_of[i] for i in part]], cat.questions)
                for i, row in zip(part, scores, strict=True):
                    score = results[i].categories[ci]
                    best = int(np.argmax(row))
                    score.vqa, score.vqa_question = float(row[best]), cat.questions[best]
                    assert cat.vqa_threshold is not None  # the policy requires it with questions
                    if score.screened and score.vqa >= cat.vqa_threshold:
                        score.hit = True
                        results[i].triggers.append(
                            {"check": "vqa", "category": cat.name, "question": score.vqa_question, "score": score.vqa,
                             "threshold": cat.vqa_threshold, "action": cat.action, "model": self.vqa.model_id}
                        )  # fmt: skip
        per_image = round((time.perf_counter() - t0) * 1e3 / len(needed), 3)
        for i in needed:
            results[i].timing_ms["vqa"] = per_image
        return needed
