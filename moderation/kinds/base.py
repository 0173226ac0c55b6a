"""The small base every record-level check kind implements.

A kind sees a batch of ``Subject``s (the decoded image, its stored PDQ hash if any, the record's
OCR text, the accompanying text) and answers, per subject, the triggers it fires (each with
``check``, ``action`` and its evidence) and its full evidence (what it measured, hit or not),
which the moderator stores next to the category scores as the audit trail.
A kind that fails on one subject reports an ``error`` trigger with the kind's ``on_error``
action (``review``: a failure is never a silent allow) instead of raising.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class Subject:
    image: Image.Image | None
    text: str | None = None  # the accompanying text (upload form, `moderate check --text`)
    ocr_text: str | None = None  # the record's OCR text column, when the collection has one
    pdq_hash: str | None = None  # the record's stored PDQ hash (hashed from the image when absent)
    pdq_quality: int | None = None


@dataclass
class KindResult:
    triggers: list[dict[str, Any]] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)


class CheckKind(ABC):
    name: str  # the key of its evidence in a result's ``checks``
    check_name: str  # the ``check`` of its triggers
    on_error = "review"

    @abstractmethod
    def check(self, subjects: list[Subject]) -> list[KindResult]:
        """One result per subject, in order."""

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name}

    def failed(self, error: str, **where: Any) -> KindResult:
        trig = {"check": self.check_name, "error": error, "action": self.on_error, **where}
        return KindResult([trig], {"error": error})
