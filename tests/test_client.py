"""End to end through blipsearch.client: a live server on loopback, a write key, a collection
created, uploaded into, indexed by a job, searched in every mode, moderated; the sync and async
clients give the same answers as the raw HTTP API; 503s are retried after Retry-After."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time

import numpy as np
import pytest
import requests
import yaml

from blipsearch.client import APIError, AsyncClient, Client
from blipsearch.config import Settings
from tests.helpers import write_images
from tests.live_server import png_bytes, serve
from tests.test_moderation import policy_dict


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_models):
    from storage.api_keys import create_key
    from storage.catalog import open_catalog

    root = tmp_path_factory.mktemp("client")
    (root / "policies").mkdir()
    (root / "policies" / "shop.yaml").write_text(yaml.safe_dump(policy_dict(itm=0.0)))
    write_images(root / "incoming", 5)
    settings = Settings(
        data_dir=root / "data",
        model=str(tiny_models["blip-itm"]),
        policy_dir=root / "policies",
        import_roots=[root / "incoming"],
        batch_size=4,
    )
    key, _ = create_key(open_catalog(settings.catalog_url()), "writer", "write")
    with serve(settings) as base:
        yield {"base": base, "key": key, "root": root}


def test_client_end_to_end(live):
    base, key = live["base"], live["key"]
    with Client(base, key) as bs:
        info = bs.create_collection("shots")
        assert info.name == "shots" and info.dim == 256 and info.count == 0
        up = bs.upload("shots", [png_bytes(i) for i in range(3)] + [("dup.png", png_bytes(0)), b"junk"])
        assert len(up.ids) == 3 and len(up.duplicates) == 1 and len(up.failures) == 1
        job = bs.start_index_job("shots", [str(live["root"] / "incoming")])
        assert job.kind == "index" and job.collection == "shots"
        done = bs.wait_job(job.id, timeout=300)
        assert done.state == "succeeded", done.raw
        assert any(j.id == job.id for j in bs.jobs(collection="shots"))
        assert bs.collection("shots").count == 8 and "shots" in [c.name for c in bs.collections()]

        raw = requests.post(f"{base}/v1/search/text", json={"query": "a red square", "collection": "shots", "k": 4})
        got = bs.search_text("a red square", "shots", k=4)
        assert got.ids == [r["id"] for r in raw.json()["results"]]
        assert [h.score for h in got.results] == pytest.approx([r["score"] for r in raw.json()["results"]], abs=1e-6)
        assert bs.search_text("a red square", "shots", k=3, mode="hybrid").results
        reranked = bs.search_text("a red square", "shots", k=3, rerank=True, rerank_k=6)
        assert all(h.itm_score is not None for h in reranked.results)
        by_image = bs.search_image(png_bytes(1), "shots", k=3)
        assert by_image.results[0].id == up.ids[1]  # the uploaded copy of the query is nearest
        sim_raw = requests.post(f"{base}/v1/search/similar", json={"collection": "shots", "id": up.ids[1], "k": 3})
        assert bs.similar("shots", up.ids[1], k=3).ids == [r["id"] for r in sim_raw.json()["results"]]
        assert bs.record("shots", up.ids[0])["id"] == up.ids[0]

        texts = bs.embed_texts(["a red square"], collection="shots")
        want = requests.post(f"{base}/v1/embed", json={"texts": ["a red square"], "collection": "shots"}).json()
        np.testing.assert_allclose(texts.embeddings, want["embeddings"], atol=1e-7)
        images = bs.embed_images([png_bytes(2)], collection="shots")
        assert images.vectors_per_item == 1 and len(images.embeddings[0]) == images.dim == 256

        check = bs.moderate(png_bytes(1), "shop", text="a cat")
        assert check.decision == "block" and check.policy == "test" and len(check.categories) == 3

        with pytest.raises(APIError) as err:
            bs.search_text("x", "no-such-collection")
        assert err.value.status == 404 and err.value.code == "collection_not_found"
    with Client(base) as anonymous, pytest.raises(APIError) as denied:
        anonymous.upload("shots", [png_bytes(9)])
    assert denied.value.status == 401


def test_async_client_matches_sync(live):
    base, key = live["base"], live["key"]
    with Client(base, key) as bs:
        bs.create_collection("pair")
        ids = bs.upload("pair", [png_bytes(20 + i) for i in range(3)]).ids
        want = bs.search_text("blue stripes", "pair", k=3)

    async def run() -> tuple:
        async with AsyncClient(base, key) as abs_:
            text, sim, jobs = await asyncio.gather(
                abs_.search_text("blue stripes", "pair", k=3), abs_.similar("pair", ids[0], k=2), abs_.jobs()
            )
            return text, sim, jobs

    text, sim, jobs = asyncio.run(run())
    with Client(base, key) as bs:
        assert sim.ids == bs.similar("pair", ids[0], k=2).ids
    assert text.ids == want.ids and len(sim.ids) == 2 and isinstance(jobs, list)


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 + Retry-After to the first ``fail`` requests, then a search result."""

    fail = 2
    seen: list[float] = []  # noqa: RUF012 - the handler's class is the test's record

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).seen.append(time.monotonic())
        if len(self.seen) <= self.fail:
            body, status, extra = b'{"code": "overloaded", "detail": "busy"}', 503, {"Retry-After": "1"}
        else:
            body = json.dumps({"collection": "c", "results": [{"id": 7, "score": 0.5, "itc_score": 0.5}]}).encode()
            status, extra = 200, {}
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)), **extra}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def test_retries_503_after_retry_after():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        _Flaky.seen, _Flaky.fail = [], 2
        res = Client(url, max_wait=0.2).search_text("x", "c")
        assert res.ids == [7] and len(_Flaky.seen) == 3
        assert all(b - a >= 0.19 for a, b in zip(_Flaky.seen, _Flaky.seen[1:], strict=False))  # waited, capped
        _Flaky.seen, _Flaky.fail = [], 10
        with pytest.raises(APIError) as err:
            Client(url, retries=2, max_wait=0.01).search_text("x", "c")
        assert err.value.status == 503 and err.value.code == "overloaded" and len(_Flaky.seen) == 3
    finally:
        server.shutdown()
