"""Hostile inputs that used to answer 500, give a traceback or a wrong answer: caption lengths
past the decoder's positions, unwritable outputs, bad index specs, ``#`` in tar member names,
directory-symlink loops in globs."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from blipsearch.config import Settings
from tests.helpers import make_image


def _png() -> bytes:
    buf = io.BytesIO()
    make_image(1).save(buf, "PNG")
    return buf.getvalue()


def test_caption_longer_than_the_decoder_positions_is_422(tmp_path, tiny_models):
    settings = Settings(data_dir=tmp_path / "data", caption_model=str(tiny_models["blip-caption"]))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post("/v1/captions", files={"file": ("x.png", _png(), "image/png")}, data={"max_new_tokens": "500"})
        assert r.status_code == 422 and "64 positions" in r.json()["detail"], r.text
        ok = client.post("/v1/captions", files={"file": ("x.png", _png(), "image/png")}, data={"max_new_tokens": "4"})
        assert ok.status_code == 200, ok.text


def test_caption_cli_names_the_limit(tmp_path, tiny_models, monkeypatch):
    from cli.main import app

    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    make_image(1).save(tmp_path / "a.png")
    args = ["caption", str(tmp_path / "a.png"), "--caption-model", str(tiny_models["blip-caption"])]
    r = CliRunner().invoke(app, [*args, "--max-new-tokens", "500"])
    assert r.exit_code == 2 and "--max-new-tokens" in r.output and "64 positions" in r.output, r.output
    assert "Traceback" not in r.output
