"""Date expressions of the one-box parser: words to a [start, end) range of days.

Forms (case-insensitive; ``today`` is injectable, so parsing is deterministic):

* ISO: ``2023``, ``2023-07``, ``2023-07-14``; ranges ``2019-2021``, ``2023-07..2023-09``;
* ``July 2023``, ``Jul 2023``, ``July 14 2023``, ``14 July 2023``, ``July 14`` (the most
  recent July 14 up to today); a year alone is 1800-2199;
* seasons (northern, meteorological: spring Mar-May, summer Jun-Aug, autumn/fall Sep-Nov,
  winter Dec-Feb, named by the year it starts in): ``summer 2022``, ``last summer`` (the most
  recent one that has ended), ``this summer``;
* ``today``, ``yesterday``, ``this/last week`` (Monday first), ``this/last month``,
  ``this/last year``, ``last 7 days``;
* prefixes: ``since X`` (from the start of X), ``after X`` (from the end of X), ``before X``
  (up to the start of X), ``until X`` / ``till X`` (up to the end of X), ``from X to Y``,
  ``between X and Y``, ``from X`` / ``in X`` / ``on X`` / ``during X`` (X itself). After
  since/after/before/until/from/between a month alone is a date (``since March``: the most recent
  March 1 up to today); anywhere else a month alone stays a visual word.

A form that names a day that does not exist (``February 30``, ``2023-02-30``) is an error,
never skipped.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta

from blipsearch.errors import InvalidInputError

MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
MONTHS["sept"] = 9
SEASONS = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}  # first month of each
YEARS = (1800, 2199)
_ISO = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?$")
_DAY = re.compile(r"^(\d{1,2})(?:st|nd|rd|th)?$")
_OPEN = ("since", "after", "before", "until", "till")


@dataclass(frozen=True)
class Span:
    """Days ``start`` (inclusive) to ``end`` (exclusive); None: unbounded."""

    start: date | None
    end: date | None


def _month_end(y: int, m: int) -> date:
    return date(y + (m == 12), m % 12 + 1, 1)


def _add_months(y: int, m: int, n: int) -> tuple[int, int]:
    idx = y * 12 + (m - 1) + n
    return idx // 12, idx % 12 + 1


def _day(y: int, m: int, d: int, said: str) -> date:
    try:
        return date(y, m, d)
    except ValueError:
        days = calendar.monthrange(y, m)[1] if 1 <= m <= 12 else 0
        why = f"{calendar.month_name[m]} {y} has {days} days" if days else "there are 12 months"
        raise InvalidInputError(f"{said!r} is not a date: {why}.") from None


def _year(word: str) -> int | None:
    return int(word) if word.isdigit() and len(word) == 4 and YEARS[0] <= int(word) <= YEARS[1] else None


def iso(word: str) -> Span | None:
    """``2023`` / ``2023-07`` / ``2023-07-14`` as a span; a bad month or day is an error."""
    m = _ISO.match(word)
    if not m or _year(m.group(1)) is None:
        return None
    y = int(m.group(1))
    if m.group(2) is None:
        return Span(date(y, 1, 1), date(y + 1, 1, 1))
    mo = int(m.group(2))
    if not 1 <= mo <= 12:
        raise InvalidInputError(f"{word!r} is not a date: there are 12 months.")
    if m.group(3) is None:
        return Span(date(y, mo, 1), _month_end(y, mo))
    d = _day(y, mo, int(m.group(3)), word)
    return Span(d, d + timedelta(days=1))


def _range_word(word: str) -> Span | None:
    """One-word ranges: ``2019-2021``, ``2023-07..2023-09``."""
    for sep in ("..", "/"):
        if sep in word:
            a, _, b = word.partition(sep)
            lo, hi = iso(a), iso(b)
            if lo is not None and hi is not None:
                return _ordered(lo, hi, word)
    m = re.match(r"^(\d{4})-(\d{4})$", word)
    if m and _year(m.group(1)) and _year(m.group(2)):
        return _ordered(iso(m.group(1)), iso(m.group(2)), word)  # type: ignore[arg-type]
    return None


def _ordered(lo: Span, hi: Span, said: str) -> Span:
    if lo.start is not None and hi.end is not None and hi.end <= lo.start:
        raise InvalidInputError(f"{said!r}: the range ends before it starts.")
    return Span(lo.start, hi.end)


def _recent_month(m: int, today: date) -> int:
    """The year of the most recent month ``m`` that has started by ``today``."""
    return today.year if (today.month, 1) >= (m, 1) else today.year - 1


def _season(name: str, y: int) -> Span:
    first = SEASONS[name]
    end_y, end_m = _add_months(y, first, 3)
    return Span(date(y, first, 1), date(end_y, end_m, 1))


def _relative(w: list[str], today: date) -> tuple[int, Span] | None:
    if w[0] == "today":
        return 1, Span(today, today + timedelta(days=1))
    if w[0] == "yesterday":
        return 1, Span(today - timedelta(days=1), today)
    if len(w) < 2 or w[0] not in ("last", "this", "past"):
        return None
    this, unit = w[0] == "this", w[1]
    monday = today - timedelta(days=today.weekday())
    if unit == "week":
        return 2, Span(monday, monday + timedelta(days=7)) if this else Span(monday - timedelta(days=7), monday)
    if unit == "month":
        y, m = (today.year, today.month) if this else _add_months(today.year, today.month, -1)
        return 2, Span(date(y, m, 1), _month_end(y, m))
    if unit == "year":
        y = today.year if this else today.year - 1
        return 2, Span(date(y, 1, 1), date(y + 1, 1, 1))
    if unit in SEASONS:
        y = today.year if unit != "winter" or today.month == 12 else today.year - 1
        span = _season(unit, y)
        if not this:  # the most recent one that has ended
            while span.end is not None and span.end > today:
                y -= 1
                span = _season(unit, y)
        return 2, span
    if not this and unit.isdigit() and 1 <= int(unit) <= 36500 and len(w) > 2 and w[2] in ("days", "day"):
        return 3, Span(today - timedelta(days=int(unit) - 1), today + timedelta(days=1))
    return None


def _absolute(w: list[str], today: date, month_alone: bool) -> tuple[int, Span] | None:
    first = w[0]
    span = _range_word(first) or iso(first)
    if span is not None:
        return 1, span
    nxt = w[1] if len(w) > 1 else ""
    if first in SEASONS and _year(nxt):
        return 2, _season(first, int(nxt))
    if first in MONTHS:
        mo = MONTHS[first]
        if _year(nxt):
            y = int(nxt)
            return 2, Span(date(y, mo, 1), _month_end(y, mo))
        dm = _DAY.match(nxt)
        if dm:  # July 14 [2023]
            said = f"{first} {nxt}"
            if len(w) > 2 and _year(w[2]):
                d = _day(int(w[2]), mo, int(dm.group(1)), f"{said} {w[2]}")
                return 3, Span(d, d + timedelta(days=1))
            return 2, _recent_day(mo, int(dm.group(1)), today, said)
        if month_alone:
            y = _recent_month(mo, today)
            return 1, Span(date(y, mo, 1), _month_end(y, mo))
        return None
    dm = _DAY.match(first)
    if dm and nxt in MONTHS:  # 14 July [2023]
        mo, said = MONTHS[nxt], f"{first} {nxt}"
        if len(w) > 2 and _year(w[2]):
            d = _day(int(w[2]), mo, int(dm.group(1)), f"{said} {w[2]}")
            return 3, Span(d, d + timedelta(days=1))
        return 2, _recent_day(mo, int(dm.group(1)), today, said)
    return _relative(w, today)


def _recent_day(mo: int, d: int, today: date, said: str) -> Span:
    """The most recent ``mo``/``d`` up to ``today`` (an error if no year has that day)."""
    for y in range(today.year, today.year - 9, -1):
        try:
            day = date(y, mo, d)
        except ValueError:
            continue
        if day <= today:
            return Span(day, day + timedelta(days=1))
    most = 29 if mo == 2 else calendar.monthrange(2001, mo)[1]
    raise InvalidInputError(f"{said!r} is not a date: {calendar.month_name[mo]} has at most {most} days.")


def match(words: list[str], today: date) -> tuple[int, Span] | None:
    """The date expression at the start of ``words`` (lower-case, punctuation stripped):
    (words used, span), or None when they do not start with one."""
    if not words:
        return None
    head = words[0]
    if head in _OPEN and len(words) > 1:
        got = _absolute(words[1:], today, True)
        if got is None:
            return None
        n, s = got
        start, end = {
            "since": (s.start, None),
            "after": (s.end, None),
            "before": (None, s.start),
        }.get(head, (None, s.end))
        return n + 1, Span(start, end)
    if head in ("from", "between") and len(words) > 1:
        got = _absolute(words[1:], today, True)
        if got is None:
            return None
        n, lo = got
        rest = words[1 + n :]
        if rest and rest[0] in (("to", "until", "till", "-") if head == "from" else ("and",)):
            hi = _absolute(rest[1:], today, True)
            if hi is not None:
                return 1 + n + 1 + hi[0], _ordered(lo, hi[1], " ".join(words[: 2 + n + hi[0]]))
        return (1 + n, lo) if head == "from" else None
    if head in ("in", "on", "during") and len(words) > 1:
        got = _absolute(words[1:], today, False)
        return (got[0] + 1, got[1]) if got is not None else None
    return _absolute(words, today, False)


def value(text: str, today: date) -> Span:
    """A whole ``taken:`` value as a span (every word must be part of it)."""
    words = [w for w in re.split(r"[\s_]+", text.lower().strip()) if w]
    got = match(words, today)
    if got is None or got[0] != len(words):
        raise InvalidInputError(f"{text!r} is not a date this parser knows (docs/queries.md lists the forms).")
    return got[1]
