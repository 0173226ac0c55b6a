"""``blipsearch serve --runner ray --shards 2`` on a local Ray answers like ``blipsearch serve``.

One local Ray (``ray.init(num_cpus=2)``) runs the CLI's deployment: two shard deployments (two
replicas of shard 0, one of shard 1) and the router. The same queries go to it over HTTP and to
the single-node app; ids and scores must agree. Then a shard replica is killed: Ray Serve
replaces it and queries go on, never answering 5xx other than a clear 503.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from blipsearch.config import Settings
from indexer.texts import index_texts
from service.indexing import index_paths
from tests.helpers import make_image, write_images

ray = pytest.importorskip("ray", reason="sharded serving needs the 'serve' extra")
pytest.importorskip("ray.serve", reason="sharded serving needs the 'serve' extra")

pytestmark = pytest.mark.slow
TEXTS = ["a red circle", "a green square on blue", "yellow shapes", "black and white", "a blue gradient"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    make_image(i).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, blip_embedder, tiny_models):
    root = tmp_path_factory.mktemp("rayserve")
    settings = Settings(
        data_dir=root / "data", batch_size=8, shard_size=5, jpeg_draft=False, precision="exact", microbatch=False
    )
    write_images(root / "imgs", 23)  # 5 Parquet shards: 3 for index shard 0, 2 for index shard 1
    index_paths(settings, [root / "imgs"], "photos", embedder=blip_embedder, progress=False)
    rows = [f"t{i}-{j},{t} number {i}" for i in range(4) for j, t in enumerate(TEXTS)]
    (root / "captions.csv").write_text("id,text\n" + "\n".join(rows) + "\n")
    index_texts(settings.data_dir, root / "captions.csv", "captions", blip_embedder, progress=False)
    return settings


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def served(setup, cluster):
    """The CLI serving ``setup``'s data dir on the test's Ray; yields its base URL."""
    port = _free_port()
    env = {
        **os.environ,
        "BLIPSEARCH_PRECISION": "exact",
        "BLIPSEARCH_JPEG_DRAFT": "false",
        "BLIPSEARCH_MICROBATCH": "false",
        "BLIPSEARCH_RAY_SHARD_CPUS": "0.25",
        "BLIPSEARCH_RAY_ROUTER_CPUS": "0.5",
        "BLIPSEARCH_SHARD_TIMEOUT_S": "30",
    }
    cmd = [sys.executable, "-m", "cli", "serve", "--runner", "ray", "--address", cluster, "--shards", "2"]
    cmd += ["--replicas", "2", "--port", str(port), "--data-dir", str(setup.data_dir)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import httpx

    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the Ray Serve deployment did not come up"
        time.sleep(1)
    yield url
    proc.send_signal(2)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def single(setup):
    with TestClient(create_app(setup), raise_server_exceptions=False) as c:
        yield c


def _post(client, url: str, path: str, **kw):
    r = client.post(f"{url}{path}", timeout=120, **kw)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def _same(a: dict, b: dict, tol: float = 1e-4) -> None:
    """Same results up to float ties: equal scores (within ``tol``) rank by rank, and the same id
    at every rank whose score is not within ``tol`` of another (or of the last, which a record
    past k may share)."""
    ia, ib = [h["id"] for h in a["results"]], [h["id"] for h in b["results"]]
    sa = np.array([h["score"] for h in a["results"]])
    np.testing.assert_allclose([h["score"] for h in b["results"]], sa, atol=tol)
    for r, (x, y) in enumerate(zip(ia, ib, strict=True)):
        tied = np.sum(np.abs(sa - sa[r]) <= tol) > 1 or abs(sa[r] - sa[-1]) <= tol
        assert x == y or tied, (r, ia, ib, sa)
    assert b["partial"] is False and b["missing_shards"] == []


QUERIES = [
    ("/v1/search/text", {"json": {"query": "a red circle", "collection": "photos", "k": 10}}),
    ("/v1/search/text", {"json": {"query": "blue", "collection": "photos", "k": 23}}),
    (
        "/v1/search/text",
        {"json": {"query": "shapes", "collection": "photos", "k": 5, "filters": {"min_width": 90}}},
    ),
    ("/v1/search/text", {"json": {"query": "green", "collection": "photos", "k": 4, "rerank": True, "rerank_k": 12}}),
    ("/v1/search/similar", {"json": {"collection": "photos", "id": 7, "k": 6}}),
]


def test_two_shards_answer_like_one_node(served, single):
    import httpx

    with httpx.Client() as http:
        for path, kw in QUERIES:
            a = _post(single, "", path, **kw)
            b = _post(http, served, path, **kw)
            assert a["results"], (path, kw)
            _same(a, b)
        # min_score cuts where the scores of this (random) model lie: between the 3rd and 4th hit.
        scores = [h["score"] for h in _post(single, "", *QUERIES[0][:1], **QUERIES[0][1])["results"]]
        cut = {"json": {**QUERIES[0][1]["json"], "min_score": (scores[2] + scores[3]) / 2}}
        a = _post(single, "", "/v1/search/text", **cut)
        assert len(a["results"]) == 3
        _same(a, _post(http, served, "/v1/search/text", **cut))
        for i in (2, 11):  # image -> image, and image -> text on the text collection
            for coll in ("photos", "captions"):
                files = {"file": ("q.jpg", _jpeg(i), "image/jpeg")}
                data = {"collection": coll, "k": "5"}
                _same(
                    _post(single, "", "/v1/search/image", files=files, data=data),
                    _post(http, served, "/v1/search/image", files=files, data=data),
                )
        # The router's records and collection views are the single server's.
        assert http.get(f"{served}/v1/collections/photos").json()["count"] == 23
    # The answers came through the shards: each holds the vectors of the Parquet shards dealt to it.
    from ray import serve

    from search.sharded import split
    from storage.collection import Collection

    want: dict[int, dict[str, int]] = {0: {}, 1: {}}
    for name in ("photos", "captions"):
        parts = split(Collection.open(single.app.state.blip.settings.data_dir, name).manifest.shards, 2)
        for i in (0, 1):
            want[i][name] = sum(s.rows for s in parts[i])
    assert want[0]["photos"] and want[1]["photos"]
    for i in (0, 1):
        handle = serve.get_deployment_handle(f"shard-{i}", app_name="blipsearch")
        seen = [handle.stats.remote().result(timeout_s=60)["collections"] for _ in range(8)]  # either replica
        assert any(seen), i
        for held in seen:
            assert all(c["stored_vectors"] == want[i][name] for name, c in held.items()), (i, held)


def _replicas(deployment: str) -> list[str]:
    from ray.util import list_named_actors

    return sorted(
        a["name"]
        for a in list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::") and f"#{deployment}#" in a["name"]
    )


def test_a_killed_shard_replica_is_replaced_and_queries_go_on(served, single):
    import httpx

    path, kw = QUERIES[0]
    want = _post(single, "", path, **kw)
    before = _replicas("shard-0")
    assert len(before) == 2, before
    ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
    statuses = []
    with httpx.Client() as http:
        deadline = time.monotonic() + 120
        while True:
            r = http.post(f"{served}{path}", timeout=60, **kw)
            statuses.append(r.status_code)
            assert r.status_code in (200, 503), r.text  # never a 500
            if r.status_code == 200:
                _same(want, r.json())
            now = _replicas("shard-0")
            if before[0] not in now and len(now) == 2 and r.status_code == 200:
                break
            assert time.monotonic() < deadline, (now, statuses[-5:])
            time.sleep(0.5)
    assert statuses.count(200) >= 1


def test_uploads_and_deletes_through_the_router_reach_the_shards(served, single, setup):
    import httpx

    from storage.api_keys import create_key
    from storage.catalog import open_catalog

    key = create_key(open_catalog(setup.catalog_url()), "ray-writer", "write")[0]
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as http:
        files = [("files", (f"new{i}.jpg", _jpeg(500 + i), "image/jpeg")) for i in range(3)]
        up = http.post(f"{served}/v1/collections/photos/images", files=files, timeout=120)
        assert up.status_code == 200, up.text
        new_ids = up.json()["ids"]
        assert len(new_ids) == 3, up.json()
        q = {"json": {"query": "a red circle", "collection": "photos", "k": 30}}
        b = _post(http, served, "/v1/search/text", **q)
        assert set(new_ids) <= {h["id"] for h in b["results"]}  # k covers the whole collection
        _same(_post(single, "", "/v1/search/text", **q), b)
        gone = http.delete(f"{served}/v1/collections/photos/images/{new_ids[0]}", timeout=60)
        assert gone.status_code == 200, gone.text
        b = _post(http, served, "/v1/search/text", **q)
        assert new_ids[0] not in {h["id"] for h in b["results"]}
        _same(_post(single, "", "/v1/search/text", **q), b)
        # A manual block hides the record from both (moderation exclusion inside the shards).
        top = b["results"][0]["id"]
        decide = {"collection": "photos", "id": top, "decision": "block", "note": "test"}
        assert http.post(f"{served}/v1/moderation/decisions", json=decide, timeout=60).status_code == 200
        b = _post(http, served, "/v1/search/text", **q)
        assert top not in {h["id"] for h in b["results"]} and len(b["results"]) == 23 + 3 - 2
        _same(_post(single, "", "/v1/search/text", **q), b)
