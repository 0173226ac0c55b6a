"""Cost limits of the HTTP API: re-ranking depth for callers without a write key
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
from search.budget import CostBudget
from service.indexing import index_paths
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


# -- defect 4: decodes ---------------------------------------------------------------------
def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _big(side: int) -> bytes:
    """A few hundred KB that decode to side² pixels (the issue's decode amplification)."""
    img = Image.linear_gradient("L").resize((side, side))
    return _png(img)


def test_healthz_stays_responsive_while_a_big_image_decodes(env):
    from media.decode import decode_image

    client, _ = env
    data = _big(7000)  # 49 Mpx: under the per-image and per-request limits
    t0 = time.perf_counter()
    decode_image(data, 10**9)  # what the old code did on the event loop
    t_decode = time.perf_counter() - t0
    assert t_decode > 0.2, "the test image decodes too fast to show anything on this machine"
    done = threading.Event()
    result: dict[str, object] = {}

    def query() -> None:
        files = {"file": ("big.png", data, "image/png")}
        result["r"] = client.post("/v1/search/image", files=files, data={"collection": "photos", "k": "3"})
        done.set()

    worker = threading.Thread(target=query)
    worker.start()
    waits = []
    while not done.is_set():
        t0 = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        waits.append(time.perf_counter() - t0)
        time.sleep(0.005)
    worker.join()
    assert result["r"].status_code == 200, result["r"].text  # type: ignore[attr-defined]
    assert len(waits) >= 3
    assert max(waits) < t_decode / 2, f"/healthz waited {max(waits):.3f}s; a full decode takes {t_decode:.3f}s"


def test_request_pixel_budget(env):
    client, keys = env
    h = {"Authorization": f"Bearer {keys['write']}"}
    assert client.post("/v1/collections", json={"name": "pix"}, headers=h).status_code == 201
    big = _big(4000)  # 16 Mpx each: every image is under the per-image limit
    files = [("files", (f"{i}.png", big, "image/png")) for i in range(4)]  # 64 Mpx in all
    r = client.post("/v1/collections/pix/images", files=files, headers=h)
    assert r.status_code == 413, r.text
    assert "BLIPSEARCH_MAX_REQUEST_PIXELS" in r.json()["detail"]
    assert client.get("/v1/collections/pix").json()["count"] == 0  # nothing was indexed
    query = {"file": ("b.png", _big(7200), "image/png")}  # 52 Mpx: one image over the request budget
    r = client.post("/v1/search/image", files=query, data={"collection": "photos"})
    assert r.status_code == 413 and "BLIPSEARCH_MAX_REQUEST_PIXELS" in r.json()["detail"]
    # within the budget the same images are indexed
    r = client.post("/v1/collections/pix/images", files=files[:3], headers=h)
    assert r.status_code == 200 and len(r.json()["added"]) == 1 and len(r.json()["duplicates"]) == 2, r.text


def test_large_query_images_decode_reduced_and_match_the_full_decode(blip_embedder):
    from api.uploads import sniff_and_decode
    from tests.helpers import make_image

    side = blip_embedder.input_size
    data = _png(make_image(11, (1600, 1200)))
    full = sniff_and_decode(data, "q.png", "image/png", 10**9)
    fast = sniff_and_decode(data, "q.png", "image/png", 10**9, side)
    assert (fast.width, fast.height) == (full.width, full.height) == (1600, 1200)
    assert min(fast.image.size) >= side and fast.image.size[0] < 1600  # really reduced, never below the input
    e_full, e_fast = blip_embedder.embed_images([full.image, fast.image])
    assert float(e_full @ e_fast) > 0.99
    one_bit = _png(Image.new("1", (3000, 3000), 1))  # mode 1 is reduced too (through L)
    assert max(sniff_and_decode(one_bit, "b.png", "image/png", 10**9, side).image.size) < 3000
