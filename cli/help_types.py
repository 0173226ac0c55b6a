"""Value placeholders in ``--help``: ``--collection TEXT``, ``-k INTEGER``, ``--image PATH``.

Typer 0.2x writes a parameter's Python type after each option (``--collection <str>``,
``--image <list[Path]>``, ``--num-beams <int range>``): Python spellings a user should not have to
read, and for arguments a repeat of what the name already says. ``install`` replaces that label
with the placeholders command-line tools use (click's own: TEXT, INTEGER, FLOAT, PATH; choices
as ``a|b``), and none after an argument's name. A range stays in the help's ``[1<=x<=512]``; a
repeatable option says "repeatable" in its help. Only the help text changes, never parsing.
"""

from __future__ import annotations

import re
from typing import Any

PLACEHOLDERS = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "FLOAT",
    "bool": "BOOLEAN",
    "Path": "PATH",
    "path": "PATH",
    "file": "FILE",
    "dir": "DIR",
    "directory": "DIR",
    "datetime": "DATETIME",
}


def placeholder(label: str) -> str:
    """``<list[Path]>`` → ``PATH``, ``<int range>`` → ``INTEGER``, ``<a|b>`` → ``a|b``."""
    inner = label[1:-1] if label.startswith("<") and label.endswith(">") else label
    m = re.fullmatch(r"list\[(.*)\]", inner)
    if m:
        inner = m.group(1)
    inner = re.sub(r" range$", "", inner)
    return PLACEHOLDERS.get(inner, inner)


def install() -> None:
    """Use ``placeholder`` for every Typer option's value, and none for arguments."""
    try:
        from typer.core import TyperArgument, _TyperParameter
    except ImportError:  # another Typer layout: its own labels stay
        return
    original = getattr(_TyperParameter, "display_type", None)
    if original is None or getattr(original, "_blipsearch", False):
        return

    def display_type(self: Any, ctx: Any) -> str:
        label = original(self, ctx)
        if isinstance(self, TyperArgument):
            return ""
        return placeholder(str(label))

    display_type._blipsearch = True  # type: ignore[attr-defined]
    _TyperParameter.display_type = display_type  # type: ignore[method-assign]
