"""Yes/no visual questions answered by an instruction-following captioner (InstructBLIP, LLaVA).

The score of a question is ``P(yes) / (P(yes) + P(no))`` where P is the softmax of the first
generated token's logits (the same prompt construction as captioning: the question is the
InstructBLIP instruction, or the LLaVA user turn of the chat template with
``add_generation_prompt=True``). ``P(yes)`` sums the probabilities of every *single-token*
spelling of yes the tokenizer has among ``yes``, ``Yes``, ``YES`` with and without a leading
space, likewise for no; the ids are reported (``token_ids``). For sentencepiece tokenizers these
are the ``▁yes``/``▁Yes``/… pieces (Flan-T5 tends to answer ``▁yes``/``▁no``, Vicuna/LLaMA
``▁Yes``/``▁No``); counting every spelling makes the score independent of which capitalisation
the model prefers. Multi-piece spellings are left out: their first piece is not an answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from blipsearch.errors import ModelLoadError
from models.captioners.base import Captioner

if TYPE_CHECKING:
    from PIL import Image

YES = ("yes", "Yes", "YES")
NO = ("no", "No", "NO")


def answer_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """Ids of the single-token encodings of ``words`` (and of each with a leading space)."""
    ids: set[int] = set()
    for word in words:
        for text in (word, " " + word):
            enc = tokenizer.encode(text, add_special_tokens=False)
            if len(enc) == 1 and tokenizer.decode(enc).strip() == word:
                ids.add(int(enc[0]))
    return sorted(ids)


class VisualQuestionScorer:
    def __init__(self, captioner: Captioner) -> None:
        if not captioner.supports_vqa:
            raise ModelLoadError(
                f"{captioner.model_id!r} ({captioner.family}) cannot answer visual questions; use an InstructBLIP "
                "(e.g. Salesforce/instructblip-flan-t5-xl) or LLaVA (e.g. llava-hf/llava-1.5-7b-hf) checkpoint."
            )
        self.captioner = captioner
        tokenizer = captioner.processor.tokenizer
        self.yes_ids = answer_token_ids(tokenizer, YES)
        self.no_ids = answer_token_ids(tokenizer, NO)
        if not self.yes_ids or not self.no_ids:
            raise ModelLoadError(f"The tokenizer of {captioner.model_id!r} has no single token for yes or for no.")

    @property
    def model_id(self) -> str:
        return self.captioner.model_id

    @property
    def token_ids(self) -> dict[str, list[int]]:
        return {"yes": self.yes_ids, "no": self.no_ids}

    def scores_from_logits(self, logits: torch.Tensor) -> np.ndarray:
        """[n, vocab] first-token logits -> [n] P(yes) / (P(yes) + P(no))."""
        logp = torch.log_softmax(logits.double(), dim=-1)
        yes = torch.logsumexp(logp[:, self.yes_ids], dim=-1)
        no = torch.logsumexp(logp[:, self.no_ids], dim=-1)
        return torch.sigmoid(yes - no).numpy()  # = P(yes) / (P(yes) + P(no))

    def score_pixels(self, pixel_values: np.ndarray, questions: Sequence[str]) -> np.ndarray:
        """[n, 3, H, W] pixels (this model's preprocessing) -> [n, len(questions)] scores."""
        cols = [self.scores_from_logits(self.captioner.first_token_logits(pixel_values, q)) for q in questions]
        return np.stack(cols, axis=1) if cols else np.zeros((len(pixel_values), 0))

    def score_images(self, images: Sequence[Image.Image], questions: Sequence[str]) -> np.ndarray:
        bs = self.captioner.batch_size
        parts = [
            self.score_pixels(self.captioner.preprocess(images[i : i + bs]), questions)
            for i in range(0, len(images), bs)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(questions)))

    def describe(self) -> dict[str, object]:
        return {"model_id": self.model_id, "family": self.captioner.family, "token_ids": self.token_ids}
