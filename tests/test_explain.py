"""One query plan: ``search --explain`` / ``explain: true`` show the plan and what ran, and a
request resolves its engine once, reads each record once and scores each ITC candidate once."""

from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.state import AppState
from blipsearch.config import Settings
from search.faiss_index import FaissIndex
from search.index_base import RecordVectors
from service.indexing import index_paths
from service.model_cache import ModelCache
from storage.collection import Collection
from tests.helpers import make_image, write_images


class Counters:
    """Counts, per request, engine resolutions, record reads (ids read) and ITC scores (per id)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.engines = 0
        self.record_reads: Counter[int] = Counter()
        self.itc: Counter[int] = Counter()
        engine, get_records = AppState.engine, Collection.get_records
        search, item_scores = FaissIndex.search, RecordVectors.item_scores

        def count_engine(state, name):
            self.engines += 1
            return engine(state, name)

        def count_records(coll, ids):
            self.record_reads.update(int(i) for i in ids)
            return get_records(coll, ids)

        def count_search(index, queries, k, *args, **kwargs):
            found = search(index, queries, k, *args, **kwargs)
            self.itc.update(int(i) for i in found[0])
            return found

        def count_scores(index, query, ids):
            self.itc.update(int(i) for i in np.asarray(ids).reshape(-1))
            return item_scores(index, query, ids)

        monkeypatch.setattr(AppState, "engine", count_engine)
        monkeypatch.setattr(Collection, "get_records", count_records)
        monkeypatch.setattr(FaissIndex, "search", count_search)
        monkeypatch.setattr(RecordVectors, "item_scores", count_scores)

    def reset(self) -> None:
        self.engines = 0
        self.record_reads.clear()
        self.itc.clear()


@pytest.fixture(scope="module")
def client(tmp_path_factory, blip_embedder, tiny_models):
    root = tmp_path_factory.mktemp("explain")
    settings = Settings(data_dir=root / "data", batch_size=8, model=str(tiny_models["blip-itm"]))
    write_images(root / "imgs", 12)
    index_paths(settings, [root / "imgs"], "photos", embedder=blip_embedder, progress=False)
    app = create_app(settings)
    app.state.blip._embedders[blip_embedder.model_id] = blip_embedder
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _text(client, **body):
    r = client.post("/v1/search/text", json={"query": "a red square", "collection": "photos", **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_explain_returns_the_plan_and_what_ran(client, tiny_models):
    assert _text(client, k=3)["explain"] is None  # only when asked
    body = _text(client, k=3, rerank=True, rerank_k=8, explain=True)
    plan, ran = body["explain"]["plan"], body["explain"]["ran"]
    assert (plan["query"], plan["mode"], plan["k"], plan["shortlist_depth"]) == ("text", "vector", 3, 8)
    assert plan["rerank"]["depth"] == 8 and plan["rerank"]["fusion"] == "itm+itc" and plan["rerank"]["own_model"]
    assert plan["index"]["exact_scores"] and plan["index"]["type"] == "flat"
    assert (ran["shortlist"], ran["itm_scored"], ran["returned"], ran["itc_scored"]) == (8, 8, 3, 0)
    assert ran["records_read"] == 8 and not any(ran["missing"].values())
    plain = _text(client, k=3, fusion="itc", rerank=True, explain=True)["explain"]
    assert plain["plan"]["rerank"] is None and plain["plan"]["fusion"] == "itc"  # itc fusion: no ITM runs


def test_explain_says_why_results_are_missing(client):
    cut = _text(client, k=12, min_score=0.99, explain=True)  # cosines of random models stay far below
    assert cut["results"] == [] and cut["explain"]["ran"]["missing"]["below_min_score"] == 12
    flt = _text(client, k=12, filters={"uri_prefix": "/nowhere"}, explain=True)["explain"]
    assert flt["plan"]["allowed_records"] == 0 and flt["ran"]["missing"]["filtered_out"] == 12
    similar = client.post("/v1/search/similar", json={"collection": "photos", "id": 0, "k": 4, "explain": True})
    ex = similar.json()["explain"]
    assert ex["plan"]["query"] == "similar" and ex["plan"]["shortlist_depth"] == 5 and ex["ran"]["returned"] == 4


@pytest.mark.parametrize(
    "body",
    [
        {"k": 3},
        {"k": 3, "rerank": True, "rerank_k": 8},
        {"k": 3, "rerank": True, "rerank_k": 8, "rerank_model": "MODEL"},
        {"k": 3, "mode": "hybrid", "rerank": True, "rerank_k": 6},
    ],
)
def test_each_record_read_and_each_itc_score_computed_once(client, monkeypatch, tiny_models, body):
    if body.get("rerank_model") == "MODEL":
        body = {**body, "rerank_model": str(tiny_models["blip-itm"])}
    _text(client, **body)  # warm: engine, re-ranker and models loaded
    counters = Counters(monkeypatch)
    out = _text(client, explain=True, **body)
    assert counters.engines == 1
    assert counters.record_reads and max(counters.record_reads.values()) == 1
    assert counters.itc and max(counters.itc.values()) == 1
    assert len(out["results"]) == 3


def test_image_and_similar_queries_count_once(client, monkeypatch):
    counters = Counters(monkeypatch)
    buf = io.BytesIO()
    make_image(3).save(buf, "PNG")
    r = client.post(
        "/v1/search/image",
        data={"collection": "photos", "k": "3", "explain": "true"},
        files={"file": ("q.png", buf.getvalue(), "image/png")},
    )
    assert r.status_code == 200, r.text
    assert r.json()["explain"]["plan"]["query"] == "image"
    assert counters.engines == 1 and max(counters.record_reads.values()) == 1 and max(counters.itc.values()) == 1
    counters.reset()
    client.post("/v1/search/similar", json={"collection": "photos", "id": 2, "k": 3})
    assert counters.engines == 1 and max(counters.record_reads.values()) == 1 and max(counters.itc.values()) == 1


def test_cli_search_explain(tmp_path, monkeypatch, tiny_models):
    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from cli.main import app

    write_images(tmp_path / "imgs", 6)
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(tmp_path / "imgs"), "--collection", "p", "--json"]).exit_code == 0
    args = ["search", "a red square", "--collection", "p", "-k", "2", "--rerank", "--rerank-k", "4"]
    out = runner.invoke(app, [*args, "--explain", "--json"])
    assert out.exit_code == 0, out.stdout
    ex = json.loads(out.stdout)["explain"]
    assert ex["plan"]["rerank"]["depth"] == 4 and ex["ran"]["itm_scored"] == 4 and ex["ran"]["returned"] == 2
    human = runner.invoke(app, [*args, "--explain"])
    assert human.exit_code == 0 and "plan: text query on p" in human.stdout and "re-rank:" in human.stdout
    assert "explain" not in json.loads(runner.invoke(app, [*args, "--json"]).stdout)


def test_model_cache_one_loader_idle_timeout_and_cascade():
    now = [0.0]
    evicted: list[tuple] = []
    cache = ModelCache(10.0, clock=lambda: now[0], on_evict=lambda key, value: evicted.append(key))
    loads = Counter()

    def load(name):
        loads[name] += 1
        return object()

    model = cache.get(("embedder", "m"), lambda: load("m"))
    engine = cache.get(("engine", "c"), lambda: load("c"), needs=(("embedder", "m"),), expires=False)
    assert cache.get(("embedder", "m"), lambda: load("m")) is model and loads["m"] == 1
    now[0] = 8.0
    cache.touch(("engine", "c"))  # using the engine uses its model
    now[0] = 15.0
    assert cache.evict_idle() == []
    now[0] = 30.0
    assert set(cache.evict_idle()) == {("embedder", "m"), ("engine", "c")}  # the engine goes with its model
    assert set(evicted) == {("embedder", "m"), ("engine", "c")} and cache.keys() == []
    assert cache.get(("embedder", "m"), lambda: load("m")) is not model and loads["m"] == 2
    del engine
    # a new stamp replaces an entry, and what was built from it
    cache.get(("engine", "c"), lambda: load("c"), stamp=1, needs=(("embedder", "m"),), expires=False)
    cache.get(("reranker", "c"), lambda: load("r"), needs=(("engine", "c"),), expires=False)
    cache.get(("engine", "c"), lambda: load("c"), stamp=2, needs=(("embedder", "m"),), expires=False)
    assert ("reranker", "c") not in cache.keys() and loads["c"] == 3


def test_idle_models_are_freed_and_reloaded(tmp_path, blip_embedder, tiny_models):
    settings = Settings(data_dir=tmp_path / "data", batch_size=8, model_idle_s=3600)
    write_images(tmp_path / "imgs", 4)
    index_paths(settings, [tmp_path / "imgs"], "p", embedder=blip_embedder, progress=False)
    state = AppState(settings)
    try:
        first = state.engine("p")
        assert state.loaded() == {"models": [blip_embedder.model_id], "collections": ["p"]}
        freed = state.models.evict_idle(now=state.models.clock() + 7200)
        assert ("engine", "p") in freed and state.loaded() == {"models": [], "collections": []}
        again = state.engine("p")  # loaded again on the next request
        assert again is not first and again.search_text("a red square", 2).hits
    finally:
        state.close()
