"""Every command's ``--help``: it exits 0, and it is written for a user: value placeholders
(``--collection TEXT``), never Python type labels (``<str>``, ``<list[Path]>``, ``<int range>``)
or reStructuredText markup from the docstrings."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from cli.help_types import placeholder
from cli.main import app


def _paths(cmd: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under ``cmd`` (Typer's click-style group; its own vendored click)."""
    out = [prefix]
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            if not sub.hidden:
                out += _paths(sub, (*prefix, name))
    return out


COMMANDS = _paths(typer.main.get_command(app))


def test_every_command_is_covered():
    names = {p[0] for p in COMMANDS if p}
    assert {"index", "search", "caption", "collections", "serve", "jobs", "moderate", "config"} <= names
    assert ("jobs", "show") in COMMANDS and ("moderate", "run") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "blipsearch")
def test_help_reads_as_plain_text(path):
    r = CliRunner().invoke(app, [*path, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output
    labels = re.findall(r"<[a-zA-Z][^>\s]*(?: range)?>", r.output)
    assert not labels, labels
    assert "``" not in r.output
    assert "Traceback" not in r.output


def test_placeholders():
    assert placeholder("<str>") == "TEXT" and placeholder("<list[Path]>") == "PATH"
    assert placeholder("<int range>") == "INTEGER" and placeholder("<float>") == "FLOAT"
    assert placeholder("<exact|fast>") == "exact|fast"


def test_options_show_placeholders_and_arguments_none():
    out = CliRunner().invoke(app, ["caption", "--help"]).output
    assert re.search(r"-c, --collection TEXT\s", out)
    assert re.search(r"--max-new-tokens INTEGER\s", out)
    assert re.search(r"--data-dir PATH\s", out)
    assert re.search(r"^\s+files\.\.\.\s+Images to caption", out, re.M)  # the argument: its name only
