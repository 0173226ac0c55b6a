"""Terminal output shared by the commands: a plain table with a header row, and score labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cell(value: Any) -> str:
    """A value as a table cell: no Python reprs (None is '-', floats short, mappings as k=v)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value) or "-"
    return str(value).replace("\n", " ")


CAPTION_WIDTH = 60  # captions longer than this are cut in tables (--json has them whole)


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, marked with an ellipsis where cut."""
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """``rows`` under a header row, columns padded to their widest cell (``right``: right-aligned
    column indexes, for counts). The last column is not padded."""
    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            last = i == len(cells) - 1
            out.append(c.rjust(widths[i]) if i in right else c if last else c.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in text)])


def score_kind(result: dict[str, Any], payload: dict[str, Any]) -> str:
    """What a search result's ``score`` is: ``itc`` (the cosine), ``bm25`` (keyword mode),
    ``rrf`` (hybrid fusion), ``itm`` (re-ranked by ITM alone) or ``itm+itc`` (fused)."""
    if result.get("itm_score") is not None:
        return str(payload.get("fusion") or "itm+itc")
    mode = payload.get("mode")
    if mode == "keyword":
        return "bm25"
    if mode == "hybrid":
        return "rrf"
    return "itc"
