"""The settings table of docs/reference.md lists every setting, only real ones, with the code's defaults.

Settings are the fields of ``blipsearch.config.Settings`` (each a ``BLIPSEARCH_*`` variable and a
key of the data dir's ``blipsearch.toml``); a few more variables are read directly by the code
(``BLIPSEARCH_SERVE_WARM``, ...). A new setting that the table does not mention, a row for a
setting that no longer exists, or a default that drifted fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from blipsearch.config import Settings

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference.md"
CODE_DIRS = ("api", "blipsearch", "cli", "evaluation", "indexer", "media", "models", "moderation", "rerank", "search")
CODE_DIRS += ("service", "storage")
ROW = re.compile(r"^\| `(BLIPSEARCH_[A-Z0-9_]+)` \| ([^|]*) \|")
UNITS = {"MiB": 2**20, "GiB": 2**30}


def _table() -> dict[str, str]:
    """variable -> its default column, from the rows of the "### Settings" section."""
    text = REFERENCE.read_text(encoding="utf-8")
    section = text.split("\n### Settings\n", 1)[1].split("\n### ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        m = ROW.match(line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} has two rows"
            rows[m.group(1)] = m.group(2).strip()
    return rows


def _settings() -> dict[str, Any]:
    return {
        f"BLIPSEARCH_{name.upper()}": field.get_default(call_default_factory=True)
        for name, field in Settings.model_fields.items()
    }


def _parse(text: str) -> tuple[bool, Any]:
    """(whether the cell is a literal value, the value): ``true``, ``32``, ``1,000,000``,
    ``256 MiB``, ``[]``, ``none``, a backticked word. Descriptive cells ("SQLite in the data
    dir") are not literals."""
    bare = text.strip("`")
    if "DATA_DIR" in bare or bare.startswith("BLIPSEARCH_"):
        return False, None  # derived from another setting (the code's default is None)
    if bare in ("true", "false"):
        return True, bare == "true"
    if bare == "none":
        return True, None
    if bare in ("[]", "{}"):
        return True, [] if bare == "[]" else {}
    if re.fullmatch(r"[\d,]+(\.\d+)?", bare):
        return True, float(bare.replace(",", ""))
    m = re.fullmatch(r"([\d.]+) (MiB|GiB)", bare)
    if m:
        return True, float(m.group(1)) * UNITS[m.group(2)]
    if re.fullmatch(r"`[^`]+`", text):
        return True, bare
    return False, None


def _read_by_code() -> set[str]:
    """Every ``BLIPSEARCH_*`` name the code mentions (variables read directly, not settings)."""
    names: set[str] = set()
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"BLIPSEARCH_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")))
    return names


def test_every_setting_has_a_row():
    missing = sorted(set(_settings()) - set(_table()))
    assert not missing, f"docs/reference.md's settings table lacks {missing}"


def test_every_row_is_a_setting_or_a_variable_the_code_reads():
    unknown = sorted(set(_table()) - set(_settings()) - _read_by_code())
    assert not unknown, f"docs/reference.md lists variables nothing reads: {unknown}"


@pytest.mark.parametrize("var", sorted(_settings()))
def test_the_default_in_the_table_is_the_codes(var):
    cell = _table().get(var)
    if cell is None:
        pytest.skip("no row (test_every_setting_has_a_row fails)")
    literal, value = _parse(cell)
    if not literal:
        return  # a described default ("SQLite in the data dir", "a quarter of the above")
    default = _settings()[var]
    if isinstance(default, Path):
        assert Path(value) == default, (var, cell, default)
    elif isinstance(default, bool) or default is None or isinstance(default, (list, dict)):
        assert value == default, (var, cell, default)
    elif isinstance(default, (int, float)):
        assert value == pytest.approx(float(default)), (var, cell, default)
    else:
        assert value == str(default), (var, cell, default)


def test_the_parser_reads_each_kind_of_cell():
    """The table test above means something only if the cells it compares parse."""
    assert _parse("`true`") == (True, True) and _parse("1,000,000") == (True, 1e6)
    assert _parse("256 MiB") == (True, 256 * 2**20) and _parse("`[]`") == (True, [])
    assert _parse("`enc`") == (True, "enc") and _parse("none") == (True, None)
    assert _parse("SQLite in the data dir")[0] is False and _parse("`DATA_DIR/policies`")[0] is False
    literal = [v for v, cell in _table().items() if _parse(cell)[0]]
    assert len(literal) > 0.8 * len(_table())  # most rows are checked against the code
