"""Brace lists of inputs (``shards/{00000..00999}.tar``, ``{train,val}/*.jpg``), bounded.

The number of names a pattern expands to is computed from its braces before anything is
generated, so ``{0000000..9999999}`` is refused at once (a one-line error) rather than
generating ten million names. Expansion itself is the ``braceexpand`` package's (the one
WebDataset uses), so numeric ranges keep their zero padding.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from blipsearch.errors import InvalidInputError

MAX_NAMES = 1_000_000
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$|^([a-zA-Z])\.\.([a-zA-Z])$")


def has_braces(raw: str) -> bool:
    return "{" in raw and "}" in raw


def _split_alternatives(body: str) -> list[str]:
    out, depth, start = [], 0, 0
    for i, c in enumerate(body):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(body[start:i])
            start = i + 1
    out.append(body[start:])
    return out


def count_names(pattern: str) -> int:
    """How many names ``pattern`` expands to (a product over its top-level brace groups)."""
    total, i = 1, 0
    while i < len(pattern):
        if pattern[i] == "{":
            depth, j = 0, i
            while j < len(pattern):
                depth += {"{": 1, "}": -1}.get(pattern[j], 0)
                if depth == 0:
                    break
                j += 1
            if depth:
                return total  # an unbalanced brace is literal
            body = pattern[i + 1 : j]
            m = _RANGE.match(body)
            if m and m.group(1) is not None:
                step = abs(int(m.group(3))) if m.group(3) else 1
                n = abs(int(m.group(2)) - int(m.group(1))) // max(step, 1) + 1
            elif m:
                n = abs(ord(m.group(5)) - ord(m.group(4))) + 1
            elif "," in body:
                n = sum(count_names(alt) for alt in _split_alternatives(body))
            else:
                n = 1
            total *= n
            if total > 10 * MAX_NAMES:
                return total
            i = j + 1
        else:
            i += 1
    return total


def expand(pattern: str, limit: int = MAX_NAMES) -> Iterator[str]:
    if not has_braces(pattern):
        yield pattern
        return
    n = count_names(pattern)
    if n > limit:
        raise InvalidInputError(
            f"The brace list {pattern[:200]!r} expands to {n:,} names, over the limit of {limit:,}; "
            "split it into several runs."
        )
    from braceexpand import braceexpand

    yield from braceexpand(pattern)
