"""Text matching for the text rules: folded keywords, time-bounded regular expressions, and the
built-in detectors (e-mail addresses, phone numbers, URLs, payment cards).

* Keywords match case- and accent-insensitively at word boundaries: text and keywords are folded
  the same way (NFKD, combining marks dropped, case-folded: "Crème" matches "creme"), and a
  keyword matches only where the characters before and after it are not letters or digits
  (keywords in scripts written without spaces, CJK, Thai, match anywhere). Matches are
  reported on the original text, spans mapped back through the folding.
* Regular expressions run on the ``regex`` package with a time budget per rule and text
  (``timeout_ms``, shared by all the text's lines): a pattern with catastrophic backtracking
  runs out of time instead of hanging a worker, and the rule reports a timeout.
* Built-ins are regexes of the same engine under the same budget, with checks a regex cannot
  make: a phone number has 7 to 15 digits, a payment card 13 to 19 digits that pass the Luhn
  check (and is recorded masked, all but the last 4 digits).
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

MAX_TEXT = 200_000  # characters scanned per text (the rest is reported as truncated)
MAX_KEYWORDS_CHARS = 1_000_000


def _regex() -> Any:
    import regex

    return regex


def fold(text: str) -> tuple[str, list[int]]:
    """The folded text and, for each folded character, the index of the original it came from."""
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        if ch.isascii():
            piece = ch.lower()
        else:
            piece = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c)).casefold()
        out.append(piece)
        where.extend([i] * len(piece))
    return "".join(out), where


def _spaceless(word: str) -> bool:
    """A keyword in a script written without spaces between words (no word boundaries to ask for)."""
    for ch in word:
        name = unicodedata.name(ch, "")
        if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI", "LAO", "KHMER", "MYANMAR")):
            return True
    return False


def keyword_pattern(words: list[str]) -> Any:
    """One compiled alternation of the folded keywords, longest first; spaces match any run of spaces."""
    re = _regex()
    if sum(len(w) for w in words) > MAX_KEYWORDS_CHARS:
        raise ValueError(f"keywords over {MAX_KEYWORDS_CHARS} characters in all")
    parts = []
    for w in sorted({fold(w.strip())[0] for w in words}, key=len, reverse=True):
        body = r"\s+".join(re.escape(p) for p in w.split())
        parts.append(body if _spaceless(w) else rf"(?<![\w]){body}(?![\w])")
    return re.compile("|".join(parts), re.V1)


def compile_regex(pattern: str) -> Any:
    """A user's regular expression, compiled (ValueError with the reason when it is not valid)."""
    re = _regex()
    try:
        return re.compile(pattern, re.V0)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    except (OverflowError, RecursionError):
        raise ValueError("regular expression too complex") from None


class Budget:
    """The time left for one rule on one text; ``left()`` raises TimeoutError when none is."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        left = self.deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError("regex timed out")
        return left


@dataclass
class Hit:
    match: str
    start: int  # within the line
    line_no: int
    line: str


def lines_of(text: str) -> Iterator[tuple[int, str]]:
    for n, line in enumerate(text[:MAX_TEXT].splitlines(), start=1):
        if line.strip():
            yield n, line


def find_regex(pattern: Any, text: str, budget: Budget, *, folded: bool = False, limit: int = 20) -> list[Hit]:
    """Matches of a compiled pattern in each line (on the folded line when ``folded``, spans mapped back)."""
    hits: list[Hit] = []
    for n, line in lines_of(text):
        target, where = fold(line) if folded else (line, None)
        for m in pattern.finditer(target, timeout=budget.left()):
            if m.end() == m.start():
                continue
            start, end = (where[m.start()], where[m.end() - 1] + 1) if where is not None else (m.start(), m.end())
            hits.append(Hit(line[start:end], start, n, line))
            if len(hits) >= limit:
                return hits
    return hits


# -- built-ins --------------------------------------------------------------------------
_EMAIL = r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}"
_URL = (
    r"(?i)(?<![\w@/.-])(?:(?:https?|ftp)://[^\s<>\"']{1,2000}|www\.[^\s<>\"']{1,2000}"
    r"|(?:[a-z0-9-]{1,63}\.){1,8}(?:com|net|org|info|biz|io|co|me|ru|cn|xyz|top|app|ly|gg|tk|to|uk|de|fr|link|site"
    r"|online|shop|click|tv|cc)(?![\w.-]|\.[a-z])(?:/[^\s<>\"']{0,2000})?)"
)
_PHONE = r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d(?:[ .-]?\d){6,16}(?![\w])"
_CARD = r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])"


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def mask_card(s: str) -> str:
    digits = _digits(s)
    keep = len(digits) - 4
    out, seen = [], 0
    for c in s:
        if c.isdigit():
            out.append("*" if seen < keep else c)
            seen += 1
        else:
            out.append(c)
    return "".join(out)


@dataclass(frozen=True)
class Builtin:
    pattern: str
    accept: Callable[[str], bool]
    redact: Callable[[str], str] | None = None
    trim: str = ""  # trailing characters that end a sentence rather than the match


BUILTINS = {
    "email": Builtin(_EMAIL, lambda s: "." in s.rsplit("@", 1)[1]),
    "url": Builtin(_URL, lambda s: True, trim=".,;:!?)]}'\""),
    "phone": Builtin(_PHONE, lambda s: 7 <= len(_digits(s)) <= 15),
    "payment_card": Builtin(_CARD, lambda s: 13 <= len(_digits(s)) <= 19 and luhn(_digits(s)), mask_card),
}


def find_builtin(kind: str, text: str, budget: Budget) -> list[Hit]:
    b = BUILTINS[kind]
    hits = [h for h in find_regex(_compiled(kind), text, budget, limit=100) if b.accept(h.match)]
    if b.trim:
        hits = [Hit(h.match.rstrip(b.trim), h.start, h.line_no, h.line) for h in hits]
    if b.redact is not None:
        hits = [Hit(b.redact(h.match), h.start, h.line_no, h.line.replace(h.match, b.redact(h.match))) for h in hits]
    return hits[:20]


_CACHE: dict[str, Any] = {}


def _compiled(kind: str) -> Any:
    if kind not in _CACHE:
        _CACHE[kind] = _regex().compile(BUILTINS[kind].pattern)
    return _CACHE[kind]


def redact_cards(line: str) -> str:
    """The line with every Luhn-valid card number masked: no rule's audit trail keeps one."""
    b = BUILTINS["payment_card"]
    return _compiled("payment_card").sub(lambda m: mask_card(m[0]) if b.accept(m[0]) else m[0], line)
