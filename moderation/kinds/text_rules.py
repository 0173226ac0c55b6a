"""Text rules over the record's OCR text (the ``ocr_text`` column) and the accompanying text:
keyword lists, time-bounded regular expressions and the built-in detectors (moderation/textmatch.py).

Every match is recorded with the rule, the source (``ocr`` or ``text``), the matched text, the
line it came from and its line number. A regex rule that runs out of its time budget on a text
reports ``timed_out`` with the rule's ``on_timeout`` action (``review`` by default): a hostile
pattern costs at most its ``timeout_ms`` per text and never passes an item silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from moderation.kinds.base import CheckKind, KindResult, Subject
from moderation.policy import TextRule

if TYPE_CHECKING:
    from PIL import Image

from moderation.textmatch import (
    MAX_TEXT,
    Budget,
    Hit,
    compile_regex,
    find_builtin,
    find_regex,
    keyword_pattern,
    redact_cards,
)


class TextRulesCheck(CheckKind):
    name = "text_rules"
    check_name = "text_rule"

    def __init__(self, rules: list[TextRule], ocr: Callable[[Image.Image], str] | None = None) -> None:
        self.rules = rules
        # reads an image's text when the subject has no stored OCR text (``moderate check``, uploads)
        self.ocr = ocr if any("ocr" in r.sources for r in rules) else None
        self.patterns: list[Any] = []
        for r in rules:
            if r.keywords is not None:
                self.patterns.append(keyword_pattern(r.keywords))
            elif r.regex is not None:
                self.patterns.append(compile_regex(r.regex))
            else:
                self.patterns.append(None)

    def _find(self, i: int, text: str) -> list[Hit]:
        rule, pattern = self.rules[i], self.patterns[i]
        budget = Budget(rule.timeout_ms / 1000)
        if rule.builtin is not None:
            return find_builtin(rule.builtin, text, budget)
        return find_regex(pattern, text, budget, folded=rule.keywords is not None)

    def check(self, subjects: list[Subject]) -> list[KindResult]:
        out = []
        for s in subjects:
            res = KindResult(evidence={"matches": [], "scanned": {}})
            ocr_text = s.ocr_text
            if ocr_text is None and self.ocr is not None and s.image is not None:
                try:
                    ocr_text = self.ocr(s.image)
                except Exception as exc:  # noqa: BLE001 - an OCR failure is that item's result, not a crash
                    res.triggers.append({"check": self.check_name, "source": "ocr", "error": f"OCR failed: {exc}",
                                         "action": self.on_error})  # fmt: skip
                res.evidence["ocr_read"] = True  # read now, not from the record
            texts = {"ocr": ocr_text, "text": s.text}
            for src, text in texts.items():
                if text:
                    res.evidence["scanned"][src] = {"chars": len(text), "truncated": len(text) > MAX_TEXT}
            for i, rule in enumerate(self.rules):
                for src in rule.sources:
                    text = texts[src]
                    if not text:
                        continue
                    base = {"check": self.check_name, "rule": rule.name, "source": src}
                    try:
                        hits = self._find(i, text)
                    except TimeoutError:
                        t = {**base, "timed_out": True, "timeout_ms": rule.timeout_ms, "action": rule.on_timeout}
                        res.triggers.append(t)
                        res.evidence["matches"].append(t)
                        continue
                    kind = "keyword" if rule.keywords is not None else "regex" if rule.regex else rule.builtin
                    for h in hits:
                        t = {**base, "kind": kind, "match": redact_cards(h.match), "line": redact_cards(h.line),
                             "line_no": h.line_no, "action": rule.action}  # fmt: skip
                        res.evidence["matches"].append(t)
                    if hits:
                        res.triggers.append(res.evidence["matches"][-len(hits)])  # one trigger per rule and source
            out.append(res)
        return out
