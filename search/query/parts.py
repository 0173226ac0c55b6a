"""A query as a weighted set of parts, and the checks every part and weight passes.

A part is a text, an image, a record of the collection (its stored vectors) or a raw vector,
with a signed weight: positive parts attract, negative parts repel. The score of a record
(search/query/score.py, docs/queries.md) is defined from the parts' ITC vectors:

* single-vector models (BLIP and every family with one vector per image):
  ``score(x) = cos(normalise(sum_i w_i e_i), x)``, the ITC score of the L2-normalised weighted
  sum of the parts' (normalised) vectors: one query vector, so one index search;
* BLIP-2 (32 vectors per image): ``score(x) = sum_i w_i maxsim(P_i, x)``, each part's max-sim
  (its query vectors against the record's vectors), combined as the weighted sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blipsearch.errors import InvalidInputError
from blipsearch.limits import MAX_FEEDBACK_IDS, MAX_PART_WEIGHT, MAX_QUERY_PARTS

KINDS = ("text", "image", "record", "vector")


@dataclass(frozen=True)
class Part:
    """One weighted part: ``kind`` text (``value``: str), image (a PIL image), record (an id
    of the collection) or vector (numbers, [dim] or [m, dim]). ``source``: the words of the
    query it came from (the parser's), or a label (``--image q.jpg``, ``positive_ids``)."""

    kind: str
    value: Any = field(repr=False)
    weight: float = 1.0
    source: str = ""

    def describe(self) -> dict[str, Any]:
        """The part as JSON (``understood.parts``, the plan's ``parts``)."""
        out: dict[str, Any] = {"kind": self.kind, "weight": self.weight}
        if self.kind == "text":
            out["text"] = self.value
        elif self.kind == "record":
            out["id"] = int(self.value)
        elif self.kind == "vector":
            out["dim"] = int(np.asarray(self.value).shape[-1])
        if self.source:
            out["source"] = self.source
        return out


def check_weight(weight: Any, where: str = "weight") -> float:
    """A part's weight: a finite, non-zero number of at most ``MAX_PART_WEIGHT`` in size."""
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise InvalidInputError(f"{where} must be a number, got {weight!r}.")
    w = float(weight)
    if not math.isfinite(w):
        raise InvalidInputError(f"{where} {w} is not a finite number.")
    if w == 0:
        raise InvalidInputError(f"{where} is 0: a part with no weight does nothing; drop it.")
    if abs(w) > MAX_PART_WEIGHT:
        raise InvalidInputError(f"{where} {w:g} is over the limit of {MAX_PART_WEIGHT:g} in size.")
    return w


def check_parts(parts: list[Part]) -> list[Part]:
    """``parts`` checked: at least one, at most ``MAX_QUERY_PARTS``, at least one positive,
    every weight valid, at most ``MAX_FEEDBACK_IDS`` record parts."""
    if not parts:
        raise InvalidInputError("The query is empty: nothing is left to search for after parsing.")
    if len(parts) > MAX_QUERY_PARTS:
        raise InvalidInputError(f"The query has {len(parts)} parts, over the limit of {MAX_QUERY_PARTS}.")
    records = sum(p.kind == "record" for p in parts)
    if records > MAX_FEEDBACK_IDS:
        raise InvalidInputError(
            f"The query names {records} records (positive_ids + negative_ids), over the limit of {MAX_FEEDBACK_IDS}."
        )
    for i, p in enumerate(parts):
        if p.kind not in KINDS:
            raise InvalidInputError(f"Part {i} has unknown kind {p.kind!r}: use one of {', '.join(KINDS)}.")
        check_weight(p.weight, f"The weight of part {i} ({p.source or p.kind})")
        if p.kind == "text" and (not isinstance(p.value, str) or not p.value.strip()):
            raise InvalidInputError(f"Part {i} is an empty text.")
    if not any(p.weight > 0 for p in parts):
        raise InvalidInputError(
            "The query has only negative parts: add something to search for (a text, an image or positive_ids)."
        )
    return parts


def is_single_text(parts: list[Part]) -> bool:
    """True for a plain text query (one text part of weight 1): the classic text → image plan."""
    return len(parts) == 1 and parts[0].kind == "text" and parts[0].weight == 1.0


def feedback_parts(positive_ids: list[int] | None, negative_ids: list[int] | None) -> list[Part]:
    """``positive_ids`` / ``negative_ids`` as record parts of weight +1 / -1."""
    pos, neg = list(positive_ids or []), list(negative_ids or [])
    if len(pos) + len(neg) > MAX_FEEDBACK_IDS:
        raise InvalidInputError(
            f"positive_ids + negative_ids name {len(pos) + len(neg)} records, over the limit of {MAX_FEEDBACK_IDS}."
        )
    both = set(pos) & set(neg)
    if both:
        raise InvalidInputError(f"Record {min(both)} is in both positive_ids and negative_ids.")
    out: list[Part] = []
    for name, ids, w in (("positive_ids", pos, 1.0), ("negative_ids", neg, -1.0)):
        for rid in dict.fromkeys(ids):
            if isinstance(rid, bool) or not isinstance(rid, int) or rid < 0:
                raise InvalidInputError(f"{name} holds {rid!r}: record ids are integers of at least 0.")
            out.append(Part("record", int(rid), w, name))
    return out


def rerank_text(parts: list[Part]) -> str:
    """What ITM re-ranks a weighted query with: its positive text parts, joined by spaces
    (weights, negative parts, images and records shape the ITC shortlist only)."""
    return " ".join(str(p.value).strip() for p in parts if p.kind == "text" and p.weight > 0)
