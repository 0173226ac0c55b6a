"""Index types beyond flat: automatic choice by size and memory, explicit specs, per-query
nprobe/efSearch, recall against exact search, and the index-stats command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blipsearch.errors import InvalidInputError
from search import index_store
from search.index_choice import FLAT, choose_spec, needs_rebuild, nlist_for
from search.index_store import IndexPolicy
from search.recall import eval_recall
from storage.collection import Collection
from tests.helpers import brute_force_topk, synthetic_rows

DIM = 32
MODEL = {"model_id": "synthetic", "fingerprint": "f" * 16, "family": "blip", "dim": DIM, "vectors_per_image": 1}


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 40 random centres: structured like real embeddings, not uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, DIM))
    x = centres[rng.integers(0, 40, n)] + 0.35 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _collection(tmp_path, n: int, name: str = "v") -> Collection:
    coll = Collection.create(tmp_path, name, model=MODEL)
    vecs = _clustered(n)
    for start in range(0, n, 1000):
        stop = min(n, start + 1000)
        coll.append_aligned(synthetic_rows(start, stop), vecs[start:stop])
    return coll


def test_choose_spec_by_size_and_budget():
    gib = 2**30
    assert choose_spec(10_000, 256, gib) == FLAT
    assert choose_spec(1_000_000, 256, 16 * gib) == FLAT
    ivf = choose_spec(4_000_000, 256, 16 * gib)
    assert ivf == f"IDMap2,IVF{nlist_for(4_000_000)},Flat" and nlist_for(4_000_000) == 8192
    assert choose_spec(4_000_000, 256, gib // 2).endswith(",PQ64")  # raw vectors do not fit: PQ
    assert choose_spec(100_000, 256, 50 * 2**20).endswith(",PQ64")  # a small budget moves even 100k off Flat
    with pytest.raises(InvalidInputError, match="INDEX_MEMORY_GB"):
        choose_spec(10**9, 256, 2**20)
    assert nlist_for(100) == 2 and nlist_for(10) == 1  # at least 39 training points per list
    assert not needs_rebuild("IDMap2,IVF1024,Flat", "IDMap2,IVF2048,Flat")
    assert needs_rebuild("IDMap2,IVF1024,Flat", "IDMap2,IVF4096,Flat")
    assert needs_rebuild(FLAT, "IDMap2,IVF64,Flat")


def test_auto_index_switches_to_ivf_with_tuned_nprobe_and_per_query_knobs(tmp_path):
    coll = _collection(tmp_path, 4000)
    small = IndexPolicy(flat_max=10_000)
    assert index_store.refresh(coll, policy=small).spec == FLAT
    ids, vecs = coll.all_embeddings()

    policy = IndexPolicy(flat_max=2000, target_recall=0.95)
    info = index_store.refresh(coll, policy=policy)  # same records, but now past flat_max
    assert info.spec == f"IDMap2,IVF{nlist_for(4000)},Flat" and info.auto
    assert set(info.search_defaults) == {"nprobe"}
    index, _ = index_store.load(coll)
    assert index.kind == "ivf" and index.defaults == info.search_defaults

    # The tuned default reaches the target on held-out records; probing every list is exact.
    report = eval_recall(coll, index, queries=150, seed=1)
    at_default = next(r for r in report["rows"] if r["nprobe"] >= info.search_defaults["nprobe"])
    assert at_default["recall_at_k"] >= 0.95
    assert report["rows"][0]["nprobe"] == 1 and report["rows"][0]["recall_at_k"] < 1.0  # it is approximate
    queries = _clustered(20, seed=5)
    for q in queries:
        want, _ = brute_force_topk(q, vecs, ids, 10)
        got, _ = index.search(q, 10, index.make_params(nprobe=index.nlist))
        assert list(got) == list(want)
    # Per-call parameters never touch the shared index.
    inner = index._inner()
    before = inner.nprobe
    index.search(queries[0], 10, index.make_params(nprobe=3))
    assert inner.nprobe == before


def test_explicit_spec_is_kept_until_auto_and_hnsw_survives_deletes(tmp_path):
    coll = _collection(tmp_path, 1500)
    policy = IndexPolicy(flat_max=10**6)
    info = index_store.refresh(coll, spec="HNSW16", policy=policy)
    assert info.spec == "IDMap2,HNSW16" and not info.auto and coll.reload().index_spec == "IDMap2,HNSW16"
    assert set(info.search_defaults) == {"efSearch"}
    assert index_store.refresh(coll, policy=policy).spec == "IDMap2,HNSW16"  # remembered
    doomed = [3, 4, 5]
    coll.delete(doomed)
    info = index_store.refresh(coll, policy=policy)  # HNSW cannot remove: rebuilt without them
    index, _ = index_store.load(coll)
    assert index.ntotal == 1497 and info.spec == "IDMap2,HNSW16"
    got, _ = index.search(_clustered(1500)[3], 20)
    assert not set(got.tolist()) & set(doomed)
    assert index_store.refresh(coll, spec="auto", policy=policy).spec == FLAT
    assert coll.reload().index_spec is None
    with pytest.raises(InvalidInputError, match="Invalid FAISS index spec"):
        index_store.refresh(coll, spec="IVF-nonsense", policy=policy)
    assert coll.reload().index_spec is None  # a bad spec stores nothing


def test_index_stats_cli_reports_recall(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app

    _collection(tmp_path, 3000)
    monkeypatch.setenv("BLIPSEARCH_FLAT_MAX_VECTORS", "1000")
    out = CliRunner().invoke(
        app, ["index-stats", "-c", "v", "--eval-recall", "--queries", "50", "--data-dir", str(tmp_path), "--json"]
    )
    assert out.exit_code == 0, out.output
    p = json.loads(out.stdout)
    assert p["records"] == 3000 and p["spec"].startswith("IDMap2,IVF") and p["auto"]
    rows = p["recall"]["rows"]
    assert p["recall"]["knob"] == "nprobe" and rows[0]["nprobe"] == 1
    assert [r["recall_at_k"] for r in rows] == sorted(r["recall_at_k"] for r in rows)  # more probes, more recall
    assert all(0 <= r["recall_at_k"] <= 1 and r["qps"] > 0 for r in rows)


def test_ivf_index_reconstructs_stored_vectors_after_adds_and_deletes(tmp_path):
    """Regression: IDMap2,IVF indexes had no direct map, so re-rank depth scores and "more like
    this" (vectors_of / vectors / item_scores) failed with "direct map not initialized"."""
    coll = _collection(tmp_path, 2000)
    policy = IndexPolicy(flat_max=1000)
    info = index_store.refresh(coll, spec="IVF16,Flat", policy=policy)
    assert "IVF16,Flat" in info.spec
    index, _ = index_store.load(coll)
    ids, vecs = coll.all_embeddings()
    pick = ids[[3, 500, 1999]]
    np.testing.assert_allclose(index.vectors(pick)[:, 0], vecs[[3, 500, 1999]], atol=1e-6)
    np.testing.assert_allclose(index.vectors_of(int(ids[7]))[0], vecs[7], atol=1e-6)
    q = _clustered(1, seed=9)[0]
    np.testing.assert_allclose(index.item_scores(q, pick), vecs[[3, 500, 1999]] @ q, atol=1e-5)
    # Deletes (remove_ids) still work with the direct map, and reconstruction follows them.
    coll.delete([int(ids[3])])
    index_store.sync(coll, index)
    np.testing.assert_allclose(index.vectors(ids[[500]])[:, 0], vecs[[500]], atol=1e-6)
    got, _ = index.search(vecs[3], 5, index.make_params(nprobe=16))
    assert int(ids[3]) not in set(got.tolist())


def test_ivf_search_maps_ids_correctly_after_deletes_and_new_adds(tmp_path):
    """Regression: an IVF index wrapped in IDMap2 returned other records' ids after any delete
    (IDMap compacts its id table, the IVF lists do not renumber)."""
    coll = _collection(tmp_path, 2000)
    index_store.refresh(coll, spec="IVF16,Flat", policy=IndexPolicy(flat_max=1000))
    index, _ = index_store.load(coll)
    ids, vecs = coll.all_embeddings()
    coll.delete([int(i) for i in ids[:50:5]])
    index_store.sync(coll, index)
    params = index.make_params(nprobe=16)
    for row in (100, 1234, 1999):
        got, _ = index.search(vecs[row], 1, params)
        assert int(got[0]) == int(ids[row])
    # A reload from disk (the saved index) maps them the same way.
    index_store.refresh(coll, policy=IndexPolicy(flat_max=1000))
    again, _ = index_store.load(coll)
    got, _ = again.search(vecs[1999], 1, again.make_params(nprobe=16))
    assert int(got[0]) == int(ids[1999])
