"""The one-box parser: free text to weighted parts plus filters (docs/queries.md: the grammar).

``red car -truck July 2023 in:Spain`` becomes the parts ``"red car"`` (+1) and ``"truck"``
(-1) and the filters ``taken_after`` / ``taken_before`` (July 2023) and ``place`` (Spain).

* consecutive plain words form one text part (weight +1); a quoted phrase is a part of its
  own and is never parsed further (``"2019"`` searches the look of 2019);
* ``-x`` / ``-"x y"``: weight -1; ``+x``: a part of its own; ``2*x``, ``0.5*"x y"``,
  ``-2*x``, or a weight token before a term (``+2 "x"``, ``-3 x``);
* ``key:value`` / ``key:"a value"`` is a filter: ``in:`` / ``place:`` (place), ``camera:``,
  ``near:``, ``taken:`` (a date or range), ``added:`` (a date or range of ``added_at``), any
  ``Filters`` field by name (``uri_prefix:``, ``min_width:``, ``taken_after:`` ...), and any
  other key a field of the records (``format:png``: ``fields.format``), checked against
  the collection when the query runs;
* dates in the forms of search/query/dates.py are read anywhere among the plain words.

An ambiguous word (``Spain``, ``March``, ``summer``) stays a visual term unless marked
(``in:Spain``, ``since March``, ``last summer``). Parsing is a pure function of the text and
``today``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from blipsearch.errors import InvalidInputError
from blipsearch.limits import MAX_QUERY_PARTS
from search.query import dates
from search.query.parts import Part, check_weight

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity"
_TOKEN = re.compile(
    rf"""
    (?P<filter>(?P<fneg>-)?(?P<key>[A-Za-z_][\w.]*):(?:"(?P<fq>[^"]*)"?|(?P<fv>(?!//)[^\s"]+)))
  | (?P<weight>[+-](?:{_NUM}))(?=\s|$)
  | (?P<sign>[+-])?(?:(?P<num>{_NUM})\*)?(?:"(?P<phrase>[^"]*)"?|(?P<word>[^\s"]+))
    """,
    re.VERBOSE | re.IGNORECASE,
)
PLACE_KEYS = ("in", "place")
DATE_KEYS = ("taken", "date")
SIMPLE_KEYS = {"camera": "camera", "near": "near"}
DATE_FILTERS = ("taken_after", "taken_before", "added_after", "added_before")
INT_FILTERS = ("min_width", "max_width", "min_height", "max_height")
STR_FILTERS = ("uri_prefix", "place", "camera", "near")


@dataclass
class Understood:
    """How a query was read: its parts, its filters (the shape of the API's ``filters``), and
    for each filter the words it came from (``sources``: what the page shows as chips)."""

    parts: list[Part] = field(default_factory=list)
    filters: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parts": [p.describe() for p in self.parts],
            "filters": self.filters,
            "filter_sources": self.sources,
        }


def _iso(d: date) -> str:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc).isoformat()


class _Reader:
    def __init__(self, today: date) -> None:
        self.today = today
        self.out = Understood()
        self.words: list[str] = []  # the plain words of the text part being read
        self.pending: tuple[float, str] | None = None  # a weight token waiting for its term

    def part(self, text: str, weight: float, source: str) -> None:
        if text.strip():
            if len(self.out.parts) >= MAX_QUERY_PARTS:
                raise InvalidInputError(f"The query has more than {MAX_QUERY_PARTS} parts.")
            self.out.parts.append(Part("text", text.strip(), weight, source))

    def flush(self) -> None:
        """The plain words read so far become one text part, with any dates among them filters."""
        words, self.words = self.words, []
        text: list[str] = []
        i = 0
        while i < len(words):
            got = dates.match([_plain(w) for w in words[i:]], self.today)
            if got is None:
                text.append(words[i])
                i += 1
                continue
            n, span = got
            self.part(" ".join(text), 1.0, " ".join(text))
            text = []
            self.span("taken", span, " ".join(words[i : i + n]))
            i += n
        self.part(" ".join(text), 1.0, " ".join(text))

    def span(self, field_: str, span: dates.Span, source: str) -> None:
        """A date span as ``<field>_after`` / ``<field>_before``, intersected with any before."""
        f = self.out.filters
        lo, hi = f"{field_}_after", f"{field_}_before"
        if span.start is not None:
            start = _iso(span.start)
            f[lo] = max(f.get(lo, start), start)
            self.out.sources[lo] = source
        if span.end is not None:
            end = _iso(span.end)
            f[hi] = min(f.get(hi, end), end)
            self.out.sources[hi] = source
        if lo in f and hi in f and f[hi] <= f[lo]:
            raise InvalidInputError(f"The dates of the query exclude each other (from {f[lo]} to before {f[hi]}).")

    def set(self, name: str, value: Any, source: str) -> None:
        f = self.out.filters
        if name in f and f[name] != value:
            raise InvalidInputError(f"The query sets {name} twice ({f[name]!r} and {value!r}): give one.")
        f[name] = value
        self.out.sources[name] = source

    def filter(self, key: str, value: str, source: str) -> None:
        k = key.lower()
        if not value.strip():
            raise InvalidInputError(f"{source!r}: the filter {key}: has no value.")
        if k in PLACE_KEYS:
            self.set("place", value, source)
        elif k in SIMPLE_KEYS:
            self.set(SIMPLE_KEYS[k], value, source)
        elif k in DATE_KEYS:
            self.span("taken", dates.value(value, self.today), source)
        elif k == "added":
            self.span("added", dates.value(value, self.today), source)
        elif k in DATE_FILTERS:
            s = dates.value(value, self.today)
            self.span(
                k.rsplit("_", 1)[0],
                dates.Span(s.start, None) if k.endswith("after") else dates.Span(None, s.start),
                source,
            )
        elif k in INT_FILTERS:
            if not value.isdigit():
                raise InvalidInputError(f"{source!r}: {k} takes a whole number of pixels.")
            self.set(k, int(value), source)
        elif k in STR_FILTERS:
            self.set(k, value, source)
        else:
            fields = self.out.filters.setdefault("fields", {})
            if key in fields and fields[key] != value:
                raise InvalidInputError(f"The query sets {key} twice ({fields[key]!r} and {value!r}): give one.")
            fields[key] = value
            self.out.sources[f"fields.{key}"] = source

    def token(self, m: re.Match[str]) -> None:
        src = m.group(0)
        if m.group("filter"):
            if self.pending is not None:
                raise InvalidInputError(
                    f"The weight {self.pending[1]!r} is followed by a filter ({src!r}), not a term."
                )
            if m.group("fneg"):
                raise InvalidInputError(f"{src!r}: a filter cannot be negated.")
            self.flush()
            value = m.group("fq") if m.group("fq") is not None else m.group("fv")
            self.filter(m.group("key"), value, src)
            return
        if m.group("weight"):
            if self.pending is not None:
                raise InvalidInputError(f"Two weights in a row ({self.pending[1]!r}, {src!r}).")
            self.flush()
            self.pending = (check_weight(_number(m.group("weight")), f"The weight {src!r}"), src)
            return
        phrase, word, sign, num = m.group("phrase"), m.group("word"), m.group("sign"), m.group("num")
        weight = -1.0 if sign == "-" else 1.0
        if num is not None:
            weight *= check_weight(_number(num), f"The weight in {src!r}")
        if self.pending is not None:
            if sign or num is not None:
                raise InvalidInputError(f"The weight {self.pending[1]!r} is followed by another ({src!r}).")
            weight, wsrc = self.pending
            src = f"{wsrc} {src}"
            self.pending = None
        plain = phrase is None and not sign and num is None and not src.startswith(("+", "-"))
        if plain and word is not None:
            self.words.append(word)
            return
        self.flush()
        self.part(phrase if phrase is not None else str(word), weight, src)
        if not self.out.parts or self.out.parts[-1].source != src:
            raise InvalidInputError(f"{src!r} has nothing to search for.")


def _number(s: str) -> float:
    return float(s)


def _plain(word: str) -> str:
    return word.lower().strip(",.;!?()")


def parse(text: str, today: date | None = None) -> Understood:
    """Parse ``text`` (module docstring); ``today`` anchors relative dates (default: today, UTC)."""
    if not isinstance(text, str):
        raise InvalidInputError("The query must be a string.")
    reader = _Reader(today or datetime.now(timezone.utc).date())
    for m in _TOKEN.finditer(text):
        reader.token(m)
    if reader.pending is not None:
        raise InvalidInputError(f"The weight {reader.pending[1]!r} has no term after it.")
    reader.flush()
    return reader.out


def raw(text: str) -> Understood:
    """The whole text as one part, nothing parsed (``raw: true``, ``--raw``)."""
    out = Understood()
    if isinstance(text, str) and text.strip():
        out.parts.append(Part("text", text.strip(), 1.0, text.strip()))
    return out


def format_understood(u: dict[str, Any]) -> str:
    """``understood`` as one line for a terminal: the parts with their weights, then the filters."""
    parts = [f"{p['weight']:+g} {p.get('text', p.get('id', p['kind']))!r}" for p in u["parts"]]
    filters = [f"{k}={v}" for k, v in u["filters"].items()]
    return "understood: " + ", ".join(parts) + (f"; filters {', '.join(filters)}" if filters else "")
