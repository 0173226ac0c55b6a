"""Cost limits of the HTTP API (issue #14): re-ranking depth for callers without a write key
and a shared re-rank budget (defect 8); uploads decoded off the event loop, a bounded number
at a time, with a per-request pixel budget (defect 4)."""

from __future__ import annotations

import io
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from blipsearch.config import Settings
from blipsearch.errors import OverloadedError
from indexer.job import index_paths
from search.budget import CostBudget
from storage.api_keys import create_key
from storage.catalog import open_catalog
from tests.helpers import write_images

PUBLIC_DEPTH = 16


@pytest.fixture(scope="module")
def env(tmp_path_factory, blip_embedder, tiny_models):
    root = tmp_path_factory.mktemp("limits")
    settings = Settings(
        data_dir=root / "data",
        model=str(tiny_models["blip-itm"]),
        batch_size=8,
        public_rerank_depth=PUBLIC_DEPTH,
        rerank_budget=64,
        max_image_pixels=60_000_000,
        max_request_pixels=50_000_000,
        max_upload_bytes=8_000_000,
        max_concurrent_decodes=1,
    )
    write_images(root / "imgs", 12)
    index_paths(settings, [root / "imgs"], "photos", embedder=blip_embedder, progress=False)
    catalog = open_catalog(settings.catalog_url())
    keys = {scope: create_key(catalog, scope, scope)[0] for scope in ("read", "write")}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, keys


def _search(client, key: str | None = None, **body):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post(
        "/v1/search/text", json={"query": "a red circle", "collection": "photos", **body}, headers=headers
    )


# -- defect 8: re-ranking ------------------------------------------------------------------
def test_cost_budget_admits_while_it_fits():
    budget = CostBudget(100, "re-ranking", "candidates")
    with budget.take(60):
        with pytest.raises(OverloadedError) as err:
            with budget.take(60):
                pass
        assert err.value.retry_after >= 1
        with budget.take(40):  # still fits
            assert budget.in_flight == 100
    assert budget.in_flight == 0
    with budget.take(500):  # alone, a request over the budget still runs
        pass


@pytest.mark.parametrize(("k", "rerank_k"), [(1000, 16), (10, 1024), (PUBLIC_DEPTH + 1, 1)])
def test_anonymous_and_read_callers_cannot_rerank_deep(env, k, rerank_k):
    client, keys = env
    for key in (None, keys["read"], "bsk_bad_key"):
        r = _search(client, key, k=k, rerank=True, rerank_k=rerank_k)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "BLIPSEARCH_PUBLIC_RERANK_DEPTH" in r.json()["detail"]
    # a write key lifts the cap; so does not re-ranking, or fusion=itc (no ITM pass)
    assert _search(client, keys["write"], k=k, rerank=True, rerank_k=rerank_k).status_code == 200
    assert _search(client, None, k=k, rerank=False, rerank_k=rerank_k).status_code == 200
    assert _search(client, None, k=k, rerank=True, rerank_k=rerank_k, fusion="itc").status_code == 200


def test_reranking_within_the_cap_works(env):
    client, _ = env
    r = _search(client, None, k=5, rerank=True, rerank_k=PUBLIC_DEPTH)
    assert r.status_code == 200 and r.json()["results"][0]["itm_score"] is not None


def test_rerank_over_the_budget_answers_503_with_retry_after(env):
    client, keys = env
    budget = client.app.state.blip.rerank_budget
    with budget.take(60):  # other requests' re-ranking in flight
        r = _search(client, keys["write"], k=10, rerank=True, rerank_k=10)
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
        assert r.json()["code"] == "overloaded"
        assert _search(client, None, k=10).status_code == 200  # plain search is not held up
    assert _search(client, keys["write"], k=10, rerank=True, rerank_k=10).status_code == 200
    assert budget.in_flight == 0
