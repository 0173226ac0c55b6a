"""Defaults and limits are written once (blipsearch/limits.py): the settings, the options
objects, the CLI's help and the settings table of docs/reference.md all show the same values."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from blipsearch import limits
from blipsearch.config import DEFAULT_CAPTION_MODEL, Settings
from cli.main import app
from indexer.options import IndexOptions
from media.stored import ImageLimits
from models.options import EmbedderOptions

README = Path(__file__).resolve().parents[1] / "docs" / "reference.md"  # the settings table
DOCUMENTED = {
    "BLIPSEARCH_BATCH_SIZE": limits.BATCH_SIZE,
    "BLIPSEARCH_SHARD_SIZE": limits.SHARD_SIZE,
    "BLIPSEARCH_DECODE_WORKERS": limits.DECODE_WORKERS,
    "BLIPSEARCH_MAX_IMAGE_PIXELS": limits.MAX_IMAGE_PIXELS,
    "BLIPSEARCH_MAX_FILE_BYTES": limits.MAX_FILE_BYTES,
}


def _value(cell: str) -> int:
    cell = cell.strip().strip("`")
    m = re.fullmatch(r"(\d+) MiB", cell)
    return int(m.group(1)) * 1024 * 1024 if m else int(cell.replace(",", ""))


def test_settings_and_options_share_the_defaults(monkeypatch):
    import os

    for name in [k for k in os.environ if k.startswith("BLIPSEARCH_")]:
        monkeypatch.delenv(name)
    s = Settings()
    assert (s.batch_size, s.shard_size, s.decode_workers) == (
        limits.BATCH_SIZE,
        limits.SHARD_SIZE,
        limits.DECODE_WORKERS,
    )
    assert (s.max_image_pixels, s.max_file_bytes) == (limits.MAX_IMAGE_PIXELS, limits.MAX_FILE_BYTES)
    assert s.caption_batch_size == limits.CAPTION_BATCH_SIZE and s.caption_model == DEFAULT_CAPTION_MODEL
    built = IndexOptions.from_settings(s)
    plain = IndexOptions()
    for f in ("batch_size", "shard_size", "workers", "max_pixels", "max_bytes", "decode_mode"):
        assert getattr(built, f) == getattr(plain, f), f
    assert ImageLimits.from_settings(s) == ImageLimits()
    assert EmbedderOptions.from_settings(s).batch_size == EmbedderOptions().batch_size == limits.BATCH_SIZE


def test_readme_settings_table_shows_the_defaults():
    rows = {}
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].strip("`") in DOCUMENTED:
            rows[cells[0].strip("`")] = _value(cells[1])
    assert rows == DOCUMENTED


def test_index_help_shows_the_defaults():
    out = CliRunner().invoke(app, ["index", "--help"], env={"COLUMNS": "200"})
    text = " ".join(out.stdout.split())
    assert f"BLIPSEARCH_BATCH_SIZE, {limits.BATCH_SIZE}" in text
    assert f"BLIPSEARCH_SHARD_SIZE, {limits.SHARD_SIZE}" in text
    assert f"BLIPSEARCH_DECODE_WORKERS, {limits.DECODE_WORKERS}" in text
