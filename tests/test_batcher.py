"""Micro-batching of query encodes: equal results, real batching under concurrency, and a
bounded queue that answers 503 + Retry-After instead of piling up."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from blipsearch.config import Settings
from blipsearch.errors import OverloadedError
from search.batcher import MicroBatcher
from service.indexing import index_paths
from tests.helpers import write_images


def _until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


TEXTS = [f"a {c} {s} on a plain background" for c in ("red", "blue", "green", "gray") for s in ("circle", "square")]


def test_batched_encodes_equal_single_encodes(blip_embedder):
    sizes: list[int] = []

    def encode(xs: list[str]) -> list[np.ndarray]:
        if len(sizes) == 1:  # the first pass waits until every other caller is queued behind it
            _until(lambda: batcher.depth == len(TEXTS) - len(xs))
        return list(blip_embedder.embed_texts(xs))

    batcher = MicroBatcher(encode, max_size=8, wait_s=0.05, on_batch=sizes.append)
    try:
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(batcher.submit, TEXTS))
    finally:
        batcher.close()
    want = blip_embedder.embed_texts(TEXTS)
    np.testing.assert_allclose(np.stack(got), want, atol=1e-5)
    assert sum(sizes) == len(TEXTS) and max(sizes) > 1  # concurrent callers shared forward passes
    assert sizes[1] == len(TEXTS) - sizes[0]  # everyone queued during the first pass went in the second


def test_full_queue_raises_overloaded_and_errors_reach_every_waiter():
    release, entered = threading.Event(), threading.Event()

    def slow(xs: list[int]) -> list[int]:
        entered.set()
        release.wait(5)
        if -1 in xs:
            raise ValueError("boom")
        return [x * 2 for x in xs]

    batcher = MicroBatcher(slow, max_size=1, wait_s=0, max_queue=2)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.submit, 1)  # taken by the worker, blocked in slow()
        _until(entered.is_set)  # the worker holds item 1 inside slow(): the queue is empty
        queued = [pool.submit(batcher.submit, x) for x in (2, -1)]
        _until(lambda: batcher.depth == 2)
        with pytest.raises(OverloadedError) as err:
            batcher.submit(3)
        assert err.value.retry_after >= 1
        release.set()
        assert first.result() == 2 and queued[0].result() == 4
        with pytest.raises(ValueError, match="boom"):
            queued[1].result()
    batcher.close()


def test_api_answers_503_with_retry_after_when_the_queue_is_full(tmp_path, blip_embedder, tiny_models):
    settings = Settings(data_dir=tmp_path / "d", model=str(tiny_models["blip-itm"]), max_queue=1, microbatch_max_size=1)
    write_images(tmp_path / "i", 4)
    index_paths(settings, [tmp_path / "i"], "c", progress=False)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        body = {"query": "a red circle", "collection": "c", "k": 2}
        assert client.post("/v1/search/text", json=body).status_code == 200  # loads the engine
        state = app.state.blip
        embedder = state.embedder(str(tiny_models["blip-itm"]))
        batcher = state.text_batcher(embedder)
        gate, entered = threading.Event(), threading.Event()
        original = batcher.fn

        def blocked(xs):
            entered.set()
            gate.wait(10)
            return original(xs)

        batcher.fn = blocked
        with ThreadPoolExecutor(2) as pool:
            busy = pool.submit(batcher.submit, "one")  # in the forward pass
            _until(entered.is_set)
            queued = pool.submit(batcher.submit, "two")  # fills the queue (max_queue=1)
            _until(lambda: batcher.depth == 1)
            r = client.post("/v1/search/text", json=body)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["code"] == "overloaded"
            gate.set()
            assert busy.result().shape == (256,) and queued.result().shape == (256,)
        batcher.fn = original
        assert client.post("/v1/search/text", json=body).status_code == 200  # healthy again


def test_submit_many_keeps_order_and_shares_batches():
    sizes: list[int] = []
    batcher = MicroBatcher(lambda xs: [x * 10 for x in xs], max_size=4, wait_s=0.05, on_batch=sizes.append)
    try:
        assert batcher.submit_many(list(range(10))) == [x * 10 for x in range(10)]
        assert sum(sizes) == 10 and max(sizes) <= 4 and len(sizes) < 10
    finally:
        batcher.close()


def test_submit_many_on_a_full_queue_is_all_or_nothing():
    gate = threading.Event()
    seen: list[int] = []

    def slow(xs):
        gate.wait(5)
        seen.extend(xs)
        return xs

    batcher = MicroBatcher(slow, max_size=1, wait_s=0.0, max_queue=2)
    try:
        first = threading.Thread(target=batcher.submit, args=(0,))
        first.start()
        time.sleep(0.1)  # item 0 is being computed; the queue is empty
        with pytest.raises(OverloadedError):
            batcher.submit_many([1, 2, 3])  # 1 and 2 fit, 3 does not: 1 and 2 are cancelled
        gate.set()
        first.join(5)
        assert batcher.submit(4) == 4
        assert seen == [0, 4]
    finally:
        gate.set()
        batcher.close()
