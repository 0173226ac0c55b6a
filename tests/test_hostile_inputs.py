"""Hostile inputs that used to answer 500 or give a traceback: deeply nested JSON, an
``embedding_input`` whose norm overflows, ``index-texts`` without ``--json``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from blipsearch.config import Settings
from search.knn import embedding_query


@pytest.mark.parametrize("path", ["/knn-service", "/metadata", "/v1/embed"])
def test_deeply_nested_json_is_refused_before_parsing(tmp_path, path):
    settings = Settings(data_dir=tmp_path / "data", model=str(tmp_path / "no-model"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post(path, content=b"[" * 100_000, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "nested deeper" in r.json()["detail"], r.text
        ok = client.post(path, content=b'{"a": [[["x"]]], "text": "[{"}', headers={"content-type": "application/json"})
        assert ok.status_code != 500 and "nested deeper" not in ok.text


def test_an_embedding_of_huge_values_keeps_its_direction():
    engine = SimpleNamespace(coll=SimpleNamespace(manifest=SimpleNamespace(dim=4), name="c"))
    q = embedding_query(engine, [1e308, 1e308, 0.0, -1e308])  # type: ignore[arg-type]
    assert np.isfinite(q).all() and np.allclose(q, np.array([1, 1, 0, -1]) / np.sqrt(3), atol=1e-6)
    with pytest.raises(Exception, match="zero vector"):
        embedding_query(engine, [0.0, 0.0, 0.0, 0.0])  # type: ignore[arg-type]


def test_index_texts_prints_its_report(tmp_path, tiny_models, monkeypatch):
    from cli.main import app

    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "t.csv").write_text("id,text\n1,a red square\n2,a blue circle\n", encoding="utf-8")
    out = CliRunner().invoke(
        app, ["index-texts", str(tmp_path / "t.csv"), "-c", "t", "--model", str(tiny_models["blip-itm"])]
    )
    assert out.exit_code == 0, (out.output, out.exception)
    assert "t: added 2" in out.output
