"""On-disk IVF indexes (search/ondisk.py): the same answers as the in-memory index of the same
spec, through adds, deletes, saves, reloads and compaction; served memory-mapped."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from blipsearch.errors import InvalidInputError
from search import index_store
from search.index_choice import choose_placement, nlist_for
from search.index_store import IndexPolicy
from search.ondisk import OnDiskIndex
from storage.compaction import compact
from tests.test_index_choice import _clustered, _collection

SPEC = "IVF32,Flat"


def _same(a: index_store.VectorIndex, b: index_store.VectorIndex, queries: np.ndarray, nprobe: int, **kw) -> None:
    for q in queries:
        ia, sa = a.search(q, 10, params=a.make_params(nprobe=nprobe), **kw)
        ib, sb = b.search(q, 10, params=b.make_params(nprobe=nprobe), **kw)
        np.testing.assert_allclose(sb, sa, rtol=0, atol=1e-5)
        # equal scores may come in either order: compare ids where the scores are distinct
        distinct = np.r_[True, np.diff(sa) < -1e-5] & np.r_[np.diff(sa) < -1e-5, True]
        assert (ia[distinct] == ib[distinct]).all()
        assert set(ia.tolist()) == set(ib.tolist()) or np.isclose(sa[-1], sa[-2], atol=1e-5)


def test_placement_goes_on_disk_past_the_budget():
    gib = 2**30
    assert choose_placement(1_000_000, 256, 16 * gib) == ("IDMap2,Flat", False)
    spec, disk = choose_placement(10**9, 256, 16 * gib)  # IVF-PQ in RAM would need ~80 GB
    assert disk and spec == f"IDMap2,IVF{nlist_for(10**9)},PQ64"
    spec, disk = choose_placement(10_000, 256, 16 * gib, on_disk=True)  # forced: IVF, never Flat
    assert disk and spec.startswith("IDMap2,IVF") and spec.endswith(",Flat")
    assert choose_placement(10_000, 256, 16 * gib, on_disk=False) == ("IDMap2,Flat", False)


@pytest.mark.parametrize("spec", [SPEC, "IVF32,PQ8x4"])
def test_on_disk_equals_in_memory(tmp_path, spec):
    coll = _collection(tmp_path, 4000)
    mem = index_store.build(coll, spec)
    disk = index_store.build(coll, spec, on_disk=True)
    assert isinstance(disk, OnDiskIndex) and not disk.on_gpu and disk.ntotal == mem.ntotal == 4000
    queries = _clustered(20, seed=5)
    for nprobe in (1, 4, 32):
        _same(mem, disk, queries, nprobe)
    allowed = np.arange(0, 4000, 3)
    _same(mem, disk, queries[:5], 8, allowed=allowed)
    _same(mem, disk, queries[:5], 8, excluded=np.arange(0, 4000, 2))
    assert disk.defaults == mem.defaults  # tuned nprobe: the same recall curve
    # exact vectors come from the records (no direct map in memory)
    np.testing.assert_allclose(disk.vectors_of(7)[0], coll.embeddings_of([7])[0])


def test_saved_on_disk_index_follows_adds_deletes_and_compaction(tmp_path):
    coll = _collection(tmp_path, 3000)
    info = index_store.refresh(coll, spec=SPEC, on_disk=True)
    assert info.on_disk and coll.reload().index_on_disk is True
    assert (coll.root / info.data_file).stat().st_size > 3000 * 32 * 4
    served, _ = index_store.load(coll)
    assert isinstance(served, OnDiskIndex) and served.ntotal == 3000

    more = _clustered(500, seed=9)
    coll.append_aligned(
        {
            "uri": [f"mem://x{i}" for i in range(500)],
            "sha256": [f"{i + 10**6:064x}" for i in range(500)],
            "width": [1] * 500,
            "height": [1] * 500,
            "bytes": [1] * 500,
        },
        more,
    )
    coll.delete(list(range(0, 3500, 7)))
    assert index_store.sync(coll, served)  # the live server: new shard to the delta, deletes tombstoned
    live = 3500 - len(range(0, 3500, 7))
    assert served.ntotal == live and served.delta.ntotal == 500 - len(range(3003, 3500, 7))

    mem = index_store.build(coll, SPEC)  # the in-memory twin over the same records
    queries = np.concatenate([_clustered(10, seed=11), more[:5]])
    _same(mem, served, queries, 32)
    got, _ = served.search(queries[0], 50, params=served.make_params(nprobe=32))
    assert not set(got.tolist()) & set(range(0, 3500, 7))

    info = index_store.refresh(coll)  # saved: base + delta merged into a new lists file
    assert info.on_disk and info.ntotal == live and info.base_shards == info.covered_shards
    reopened, _ = index_store.load(coll)
    assert isinstance(reopened, OnDiskIndex) and reopened.delta.ntotal == 0 and reopened.ntotal == live
    _same(mem, reopened, queries, 32)

    compact(coll)  # shards renamed: the next open rebuilds on disk without the tombstones
    rebuilt, _ = index_store.load(coll)
    assert isinstance(rebuilt, OnDiskIndex) and rebuilt.tombstones.size == 0 and rebuilt.ntotal == live
    _same(index_store.build(coll, SPEC), rebuilt, queries, 32)


def test_on_disk_needs_an_ivf_spec(tmp_path):
    coll = _collection(tmp_path, 500)
    with pytest.raises(InvalidInputError, match="IVF"):
        index_store.refresh(coll, spec="HNSW16", on_disk=True)
    assert coll.reload().index_on_disk is None  # nothing stored
    info = index_store.refresh(coll, on_disk=True)  # auto spec, forced on disk: IVF
    assert info.on_disk and "IVF" in info.spec
    info = index_store.refresh(coll, on_disk=False)
    assert not info.on_disk and info.data_file is None
    assert not list(coll.root.glob("*.ivfdata"))  # the old lists file went with its index


RSS_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

    from search import index_store
    from storage.collection import Collection
    coll = Collection.open(sys.argv[1], "v")
    q = np.random.default_rng(1).normal(size=(20, coll.manifest.dim)).astype(np.float32)
    from search import faiss_backend
    faiss_backend.faiss()
    before = rss()
    index, _ = index_store.load(coll)
    for row in q:
        index.search(row, 10, params=index.make_params(nprobe=1))
    print(json.dumps({"grew": rss() - before, "kind": type(index).__name__}))
    """
)


@pytest.mark.slow
def test_served_on_disk_index_stays_below_its_size(tmp_path):
    """A process serving the on-disk index grows by a small part of the lists file, where the
    in-memory index of the same spec grows by all of it."""
    n, dim = 100_000, 128
    from storage.collection import Collection

    model = {"model_id": "synthetic", "fingerprint": "f" * 16, "family": "blip", "dim": dim, "vectors_per_image": 1}
    coll = Collection.create(tmp_path, "v", model=model)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, dim))
    for start in range(0, n, 10_000):
        x = centres[rng.integers(0, 200, 10_000)] + 0.5 * rng.normal(size=(10_000, dim))
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        ids = range(start, start + 10_000)
        rows = {"uri": [f"m://{i}" for i in ids], "sha256": [f"{i:064x}" for i in ids]}
        rows |= {"width": [1] * 10_000, "height": [1] * 10_000, "bytes": [1] * 10_000}
        coll.append_aligned(rows, x)
    policy = IndexPolicy(target_recall=0.5)

    def grew() -> dict:
        out = subprocess.run(
            [sys.executable, "-c", RSS_PROBE, str(tmp_path)], capture_output=True, text=True, check=True, timeout=300
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    info = index_store.refresh(coll, spec="IVF256,Flat", on_disk=True, policy=policy)
    size = (coll.root / info.data_file).stat().st_size
    assert size > n * dim * 4
    disk = grew()
    index_store.refresh(coll, on_disk=False, policy=policy)
    mem = grew()
    assert disk["kind"] == "OnDiskIndex" and mem["kind"] == "VectorIndex"
    assert mem["grew"] > 0.8 * size  # the in-memory twin holds the whole index
    assert disk["grew"] < 0.3 * size, (disk, size)  # 20 queries, nprobe 1 of 256 lists: < 8% touched


def test_blocked_ground_truth_equals_exact_search(tmp_path):
    """Recall of an on-disk index is measured against a shard-by-shard brute-force pass; it
    finds the same true neighbours as the exact in-memory index."""
    from search import recall

    coll = _collection(tmp_path, 2500)
    qids, _, truth = recall._blocked_truth(coll, 60, 10, seed=0)
    ref_ids, ref_vecs, exact = recall._sample(coll, 60, seed=0)
    assert sorted(qids.tolist()) == sorted(ref_ids.tolist())
    ref = {int(r): recall._topk(exact, q, int(r), 10, None) for r, q in zip(ref_ids, ref_vecs, strict=True)}
    assert all(ref[int(r)] == t for r, t in zip(qids, truth, strict=True))


def test_cli_on_disk_answers_like_in_memory(tmp_path, monkeypatch, tiny_models):
    """`index --on-disk` and `reindex --in-memory`: the same results for text and image queries."""
    from typer.testing import CliRunner

    from cli.main import app
    from tests.helpers import write_images

    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runner = CliRunner()

    def cli(*args: str) -> dict:
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return json.loads(result.stdout)

    write_images(tmp_path / "imgs", 12)
    cli("index", str(tmp_path / "imgs"), "-c", "p", "--index-spec", "IVF2,Flat", "--on-disk")
    stats = cli("index-stats", "-c", "p")
    assert stats["on_disk"] and stats["disk_bytes"] > 0 and stats["spec"] == "IDMap2,IVF2,Flat"
    img = str(tmp_path / "imgs" / "img_00003.jpg")
    queries = [("a red square",), ("--image", img)]
    disk = [cli("search", *q, "-c", "p", "-k", "5", "--nprobe", "2")["results"] for q in queries]
    info = cli("reindex", "-c", "p", "--in-memory")["index"]
    assert info["data_file"] is None and info["ntotal"] == 12
    mem = [cli("search", *q, "-c", "p", "-k", "5", "--nprobe", "2")["results"] for q in queries]
    for a, b in zip(disk, mem, strict=True):
        assert [r["id"] for r in a] == [r["id"] for r in b]
        np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-5)
    result = runner.invoke(app, ["reindex", "-c", "p", "--index-spec", "HNSW16", "--on-disk", "--json"])
    assert result.exit_code == 2 and "IVF" in result.stdout + result.stderr


def test_blip2_multi_vector_records_on_disk(settings, blip2_embedder, tmp_path):
    """BLIP-2 records (32 vectors each): the on-disk index ranks records like the in-memory one,
    deletes drop whole records, and re-rank depth scores come from the records' own vectors."""
    from service.indexing import index_paths
    from storage.collection import Collection
    from tests.helpers import write_images

    write_images(tmp_path / "a", 8)
    index_paths(settings, [tmp_path / "a"], "c", embedder=blip2_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "c")
    mem = index_store.build(coll, "IVF4,Flat")
    disk = index_store.build(coll, "IVF4,Flat", on_disk=True)
    q = blip2_embedder.embed_texts(["a red square"])[0]
    _same(mem, disk, q[None], 4)
    ids, emb = coll.all_embeddings()  # [8, 32, dim]
    expected = (emb @ q.reshape(-1, emb.shape[-1]).T).reshape(len(ids), -1).max(axis=1)
    np.testing.assert_allclose(disk.item_scores(q, ids), expected, atol=1e-5)
    disk.remove(np.array([3]))
    got, _ = disk.search(q, 8, params=disk.make_params(nprobe=4))
    assert 3 not in got.tolist() and len(got) == 7
