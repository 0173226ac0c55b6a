"""Bad filter values are a 422 naming the field (HTTP, both search routes and
/similar) or a one-line exit 2 (CLI), never a 500 or a traceback; naive dates are UTC."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from blipsearch.config import Settings
from cli.main import app as cli
from search.filters import Filters
from service.indexing import index_paths
from tests.helpers import write_images

BAD = [
    ({"fields": {"width": "abc"}}, "width"),
    ({"fields": {"format": 1}}, "format"),
    ({"fields": {"width": True}}, "width"),
    ({"fields": {"format": ["JPEG", 1]}}, "format"),
    ({"fields": {"width": [1, "x"]}}, "width"),
    ({"fields": {"width": 99999999999999999999}}, "width"),
    ({"fields": {"width": -99999999999999999999}}, "width"),
    ({"min_width": 99999999999999999999}, "min_width"),
    ({"max_height": 2**40}, "max_height"),
    ({"min_width": True}, "min_width"),
    ({"min_width": "abc"}, "min_width"),
    ({"added_after": "9999-12-31T23:59:59"}, "added_after"),
    ({"added_before": "0001-01-01T00:00:00"}, "added_before"),
    ({"added_after": "not a date"}, "added_after"),
    ({"added_after": True}, "added_after"),
    ({"uri_prefix": 5}, "uri_prefix"),
    ({"fields": {"format": {"a": 1}}}, "format"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("filters")
    write_images(root / "imgs", 6)
    settings = Settings(data_dir=root / "data", model=str(tiny_models["blip-itm"]), batch_size=4)
    index_paths(settings, [root / "imgs"], "c", progress=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, settings


def _names_field(r, field: str) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in r.text


@pytest.mark.parametrize(("filters", "field"), BAD)
def test_bad_filters_are_422_on_every_route(env, filters, field):
    client, _ = env
    _names_field(client.post("/v1/search/text", json={"query": "x", "collection": "c", "filters": filters}), field)
    _names_field(client.post("/v1/search/similar", json={"id": 0, "collection": "c", "filters": filters}), field)
    png = ("q.jpg", open(next((env[1].data_dir.parent / "imgs").iterdir()), "rb").read(), "image/jpeg")
    r = client.post("/v1/search/image", files={"file": png}, data={"collection": "c", "filters": json.dumps(filters)})
    _names_field(r, field)
    assert client.get("/healthz").status_code == 200  # the connection is still usable


def test_naive_dates_are_utc(env):
    client, _ = env
    f = Filters.model_validate({"added_after": "2020-01-01", "added_before": "2020-01-02T03:04:05"})
    assert f.added_after == datetime(2020, 1, 1, tzinfo=timezone.utc)
    assert f.added_before == datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    for after, expect in (("2020-01-01T00:00:00", 6), ("2999-01-01", 0)):
        body = {"query": "x", "collection": "c", "k": 10, "filters": {"added_after": after}}
        r = client.post("/v1/search/text", json=body)
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == expect


def test_field_values_from_text_are_cast_to_the_column_type(env):
    client, _ = env
    body = {"query": "x", "collection": "c", "k": 10, "filters": {"fields": {"width": "64"}}}
    r = client.post("/v1/search/text", json=body)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--where", "width=abc"], "width"),
        (["--where", "format=JPEG", "--added-after", "9999-12-31T23:59:59"], "added_after"),
        (["--min-width", "99999999999999999999"], "min"),
        (["--added-after", "yesterday"], "added_after"),
    ],
)
def test_cli_bad_filters_exit_2_with_one_line(env, args, field):
    _, settings = env
    r = CliRunner().invoke(cli, ["search", "x", "-c", "c", "--data-dir", str(settings.data_dir), *args])
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert "Traceback" not in r.output and field in r.output
    assert len(lines) <= 6  # click's usage box for option errors, one line for ours


@pytest.mark.parametrize("args", [["--where", "width=10"], ["--added-after", "2020-01-01"]])
def test_cli_reproductions_now_work(env, args):
    _, settings = env
    r = CliRunner().invoke(cli, ["search", "x", "-c", "c", "--data-dir", str(settings.data_dir), "--json", *args])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
