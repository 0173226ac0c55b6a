"""Exact re-rank ("refine") of compressed indexes: a shortlist of ``refine_k`` from a
PQ index, re-scored from the records' stored vectors and cut to k."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blipsearch.errors import InvalidInputError
from search import index_store
from search.index_choice import is_compressed, train_size
from search.index_store import IndexPolicy
from search.ondisk import OnDiskIndex
from storage.collection import Collection
from tests.helpers import synthetic_rows
from tests.test_index_choice import DIM, MODEL

SPEC = "IVF8,PQ4"  # 4 bytes a 32-d vector: near-duplicates are indistinguishable to the codes
CENTRES, N = 30, 3000


def _near_duplicates(n: int, seed: int) -> np.ndarray:
    """Unit vectors in tight clusters (as scripts/bench/scale.py: near-duplicates of 30 centres)."""
    c = np.random.default_rng(0).normal(size=(CENTRES, DIM))
    rng = np.random.default_rng(seed)
    x = c[rng.integers(0, CENTRES, n)] + 0.15 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _collection(tmp_path) -> tuple[Collection, np.ndarray]:
    coll = Collection.create(tmp_path, "r", model=MODEL)
    vecs = _near_duplicates(N, seed=1)
    for start in range(0, N, 1000):
        coll.append_aligned(synthetic_rows(start, start + 1000), vecs[start : start + 1000])
    return coll, vecs


def _recall(index, vecs, queries, **kw) -> float:
    hits = []
    for q in queries:
        truth = set(np.argsort(-(vecs @ q))[:10].tolist())
        ids, _ = index.search(q, 10, params=index.make_params(nprobe=8), **kw)
        hits.append(len(truth & set(ids.tolist())) / 10)
    return float(np.mean(hits))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    coll, vecs = _collection(tmp_path_factory.mktemp("refine"))
    mem = index_store.build(coll, SPEC, IndexPolicy(refine_k=0))
    disk = index_store.build(coll, SPEC, IndexPolicy(refine_k=0), on_disk=True)
    return coll, vecs, mem, disk


def test_spec_kinds_and_training_sample():
    assert is_compressed("IDMap2,IVF1024,PQ64") and is_compressed("PQ16") and is_compressed("IVF64,SQ8")
    assert is_compressed("IVF4096_HNSW32,PQ64") and is_compressed("OPQ16_64,IVF256,PQ16")
    assert not any(is_compressed(s) for s in ("IDMap2,Flat", "IVF1024,Flat", "HNSW32", "IVF64,SQfp32"))
    gib = 2**30
    assert train_size("IDMap2,Flat", 256, 16 * gib) == 200_000
    assert train_size("IDMap2,IVF16384,PQ64", 256, 16 * gib) == 64 * 16384  # grows with nlist
    assert train_size("IDMap2,IVF16384,PQ64", 256, gib) == gib // 4 // 1024  # capped by the budget


@pytest.mark.parametrize("placement", ["mem", "disk"])
def test_refine_makes_pq_results_the_exact_top_k(built, placement):
    _, vecs, mem, disk = built
    index = mem if placement == "mem" else disk
    assert isinstance(index, OnDiskIndex) == (placement == "disk") and index.compressed
    queries = _near_duplicates(40, seed=2)
    plain = _recall(index, vecs, queries, refine_k=0)
    refined = _recall(index, vecs, queries, refine_k=300)  # > a cluster (~100): the whole cluster is re-scored
    assert plain < 0.6, plain  # PQ alone cannot order near-duplicates
    assert refined > 0.97, refined
    for q in queries[:10]:
        ids, scores = index.search(q, 10, params=index.make_params(nprobe=8), refine_k=300)
        np.testing.assert_allclose(scores, vecs[ids] @ q, atol=1e-5)  # the exact scores, not PQ's
        assert (np.diff(scores) <= 1e-6).all()
        best = np.sort(vecs @ q)[::-1][:10]
        np.testing.assert_allclose(scores, best, atol=1e-4)  # equal to the exact top-10's scores
        pq_ids, pq_scores = index.search(q, 10, params=index.make_params(nprobe=8), refine_k=0)
        assert np.abs(pq_scores - vecs[pq_ids] @ q).max() > 1e-3  # without: PQ's approximate scores


def test_refine_is_per_call_and_off_for_exact_codes(built, tmp_path):
    coll, _, mem, _ = built
    q = _near_duplicates(1, seed=3)[0]
    before = dict(mem.defaults)
    plain = mem.search(q, 10, params=mem.make_params(nprobe=8), refine_k=0)
    mem.search(q, 10, params=mem.make_params(nprobe=8), refine_k=500)
    assert mem.defaults == before  # a per-call value never changes the shared index
    again = mem.search(q, 10, params=mem.make_params(nprobe=8))
    np.testing.assert_array_equal(plain[0], again[0])
    for bad in (-1, 5000, 2.5, True):
        with pytest.raises(InvalidInputError, match="refine_k"):
            mem.search(q, 10, refine_k=bad)
    saved = mem.lookup

    def gone(ids):
        raise KeyError(int(ids[0]))  # a record deleted since the index last synced

    mem.lookup = gone
    try:
        ids, scores = mem.search(q, 10, params=mem.make_params(nprobe=8), refine_k=300)
        assert len(ids) == 10  # the codes' own top-10 and scores, not an error
        np.testing.assert_allclose(scores, plain[1], atol=1e-5)
    finally:
        mem.lookup = saved
    flat = index_store.build(coll, "IVF8,Flat", IndexPolicy(refine_k=300))
    assert not flat.compressed and "refine_k" not in flat.defaults  # exact codes: nothing to refine
    assert flat.refine_depth(10, 300) == 10


def test_build_tunes_nprobe_with_the_refine_default(built):
    coll, vecs, plain, _ = built
    tuned = index_store.build(coll, SPEC, IndexPolicy(refine_k=300, target_recall=0.9))
    assert tuned.defaults["refine_k"] == 300 and plain.defaults.get("refine_k") is None
    queries = _near_duplicates(40, seed=4)
    # the defaults alone (no per-call knobs) reach the target with the re-rank in place
    hits = []
    for q in queries:
        truth = set(np.argsort(-(vecs @ q))[:10].tolist())
        hits.append(len(truth & set(tuned.search(q, 10)[0].tolist())) / 10)
    assert np.mean(hits) > 0.85
    assert tuned.defaults["nprobe"] <= plain.defaults["nprobe"]  # refine lets a smaller nprobe do


def test_cli_and_api_refine_k(tmp_path, monkeypatch, tiny_models):
    """`search --refine-k`, the API's refine_k field and `index-stats`; bad values: exit 2 / 422."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from api.app import create_app
    from blipsearch.config import get_settings
    from cli.main import app
    from tests.helpers import write_images

    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BLIPSEARCH_REFINE_K", "8")
    runner = CliRunner()

    def cli(*args: str) -> dict:
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return json.loads(result.stdout)

    write_images(tmp_path / "imgs", 12)
    cli("index", str(tmp_path / "imgs"), "-c", "p", "--index-spec", "IVF2,PQ4x2")
    stats = cli("index-stats", "-c", "p", "--eval-recall", "--queries", "5")
    assert stats["refine_k"] == 8 and stats["search_defaults"]["refine_k"] == 8
    assert stats["recall"]["refine_k"] == 8  # recall measured as served: with the exact re-rank
    human = runner.invoke(app, ["index-stats", "-c", "p"])
    assert human.exit_code == 0 and "refine_k): 8" in human.stdout
    exact = cli("search", "a red square", "-c", "p", "-k", "3", "--nprobe", "2", "--refine-k", "12")["results"]
    bad = runner.invoke(app, ["search", "a red square", "-c", "p", "--refine-k", "-1", "--json"])
    assert bad.exit_code == 2 and "refine_k" in bad.stdout + bad.stderr
    with TestClient(create_app(get_settings())) as client:
        body = {"query": "a red square", "collection": "p", "k": 3, "nprobe": 2}
        got = client.post("/v1/search/text", json={**body, "refine_k": 12}).json()["results"]
        assert [r["id"] for r in got] == [r["id"] for r in exact]
        np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in exact], atol=1e-5)
        assert client.post("/v1/search/text", json={**body, "refine_k": -1}).status_code == 422
        assert client.post("/v1/search/text", json={**body, "refine_k": 100_000}).status_code == 422
    cli("reindex", "-c", "p", "--index-spec", "Flat")  # exact search: what the refined PQ answered
    flat = cli("search", "a red square", "-c", "p", "-k", "3")["results"]
    assert [r["id"] for r in flat] == [r["id"] for r in exact]
    np.testing.assert_allclose([r["score"] for r in flat], [r["score"] for r in exact], atol=1e-5)
