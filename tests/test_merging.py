"""Small-shard merging: upload commits are coalesced, ``compact`` merges
small shards, ids and search results never change, a live engine follows a merge without
reloading its index, and a kill at any point loses or duplicates nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from search import index_store
from search.engine import SearchEngine
from storage.collection import Collection
from storage.compaction import compact
from storage.manifest import ShardInfo
from storage.merging import merge_all, merge_tail, plan_tail

DIM = 16
MODEL = {"model_id": "fake", "fingerprint": "f" * 16, "family": "blip", "dim": DIM, "vectors_per_image": 1}


def _rows(start: int, n: int) -> tuple[dict[str, list], np.ndarray]:
    rng = np.random.default_rng(start)
    emb = rng.normal(size=(n, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rows = {
        "uri": [f"/img/{start + i}.png" for i in range(n)],
        "sha256": [f"{start + i:064x}" for i in range(n)],
        "width": [10] * n,
        "height": [10] * n,
        "format": ["PNG"] * n,
        "bytes": [100] * n,
        "caption": [None] * n,
        "caption_model": [None] * n,
        "metadata": [None] * n,
    }
    return rows, emb


def _commits(coll: Collection, sizes: list[int], start: int = 0) -> int:
    for n in sizes:
        coll.append(*_rows(start, n))
        start += n
    return start


def _state(coll: Collection) -> tuple[list[int], np.ndarray]:
    coll.reload()
    ids, emb = coll.all_embeddings()
    return ids.tolist(), emb


def test_plan_tail_is_size_tiered():
    def shards(sizes: list[int]) -> list[ShardInfo]:
        return [ShardInfo(file=f"s{i}", rows=n, min_id=i * 1000, max_id=i * 1000 + n - 1) for i, n in enumerate(sizes)]

    assert plan_tail(shards([1, 1, 1]), set(), 64, 4) == []
    assert plan_tail(shards([1, 1, 1, 1]), set(), 64, 4) == [0, 1, 2, 3]
    # an older small shard joins only if it is no larger than what is newer than it
    assert plan_tail(shards([9, 4, 1, 1, 1, 1]), set(), 64, 4) == [1, 2, 3, 4, 5]
    assert plan_tail(shards([8, 4, 1, 1, 1, 1]), set(), 64, 4) == [0, 1, 2, 3, 4, 5]
    assert plan_tail(shards([100, 1, 1, 1, 1]), set(), 64, 4) == [1, 2, 3, 4]  # 100 is not small
    # shards covered by the saved index never merge with uncovered ones
    assert plan_tail(shards([1, 1, 1, 1, 1]), {"s0", "s1"}, 64, 4) == []


def test_upload_commits_stay_few_and_ids_keep(tmp_path):
    coll = Collection.create(tmp_path / "data", "m", model=MODEL)
    engine = SearchEngine.open(coll, _FakeEmbedder())
    index_before = engine.index
    total = 0
    for _ in range(60):  # sixty one-row commits, merged as they pile up
        total = _commits(coll, [1], total)
        merge_tail(coll, small_rows=32, fanin=4)
        coll.reload()
        assert len(coll.manifest.shards) <= 4 + 5, [s.rows for s in coll.manifest.shards]
        engine.sync()
    assert engine.index is index_before  # followed every merge by renaming, never reloaded
    ids, emb = _state(coll)
    assert ids == list(range(60))
    assert engine.index.ntotal == 60
    # the engine's answers equal a brute-force search over the records
    q = emb[7]
    got, _ = engine.index.search(q, 5)
    brute = np.argsort(-(emb @ q), kind="stable")[:5]
    assert got[0] == 7 and set(got.tolist()) == set(np.asarray(ids)[brute].tolist())
    # files of merged shards go once the next merge commits (kept one round for readers)
    names = {p.name for p in coll.root.iterdir() if p.name.startswith("shard-")}
    assert names <= {s.file for s in coll.manifest.shards} | set(coll.manifest.retired)


def test_tombstones_survive_a_merge_and_the_live_index_drops_them(tmp_path):
    coll = Collection.create(tmp_path / "data", "t", model=MODEL)
    _commits(coll, [1] * 6)
    engine = SearchEngine.open(coll, _FakeEmbedder())
    coll.delete([1, 4])
    engine.sync()  # applies the tombstones to the parents
    coll.delete([2])  # not yet seen by the engine when the merge renames its parents
    report = merge_tail(coll, small_rows=32, fanin=4)
    assert report.shards_merged >= 4
    coll.reload()
    merged = [s for s in coll.manifest.shards if s.merged_from]
    assert merged and {1, 2, 4} <= {d for s in coll.manifest.shards for d in s.deleted}
    engine.sync()
    assert engine.index.ntotal == 3
    ids, emb = _state(coll)
    assert ids == [0, 3, 5]
    for rid, vec in zip(ids, emb, strict=True):
        assert engine.index.search(vec, 1)[0][0] == rid
    # a fresh load of the saved state agrees (tombstones re-applied, no rebuild needed)
    fresh, _ = index_store.load(Collection.open(tmp_path / "data", "t"))
    assert fresh.ntotal == 3


def test_compact_merges_small_shards_and_keeps_the_saved_index(tmp_path):
    coll = Collection.create(tmp_path / "data", "c", model=MODEL)
    _commits(coll, [3] * 20)
    index_store.refresh(coll)
    coll.delete([5, 6])
    before_ids, before_emb = _state(coll)
    index_store.refresh(coll)
    report = compact(coll, small_rows=64, target_rows=32)
    assert report.rows_removed == 2 and report.shards_merged >= 15
    coll.reload()
    assert len(coll.manifest.shards) <= 3
    after_ids, after_emb = _state(coll)
    assert after_ids == before_ids and np.array_equal(after_emb, before_emb)
    assert coll.manifest.index is not None
    assert coll.manifest.index.covered_shards == [s.file for s in coll.manifest.shards]
    index, covered = index_store.load(coll)
    assert index.ntotal == len(before_ids) and covered == coll.manifest.index.covered_shards


def test_a_crash_before_the_merge_commit_changes_nothing(tmp_path, monkeypatch):
    coll = Collection.create(tmp_path / "data", "x", model=MODEL)
    _commits(coll, [2] * 8)
    before = _state(coll)
    files = sorted(p.name for p in coll.root.iterdir())
    from storage import manifest

    def crash(self, path):
        raise OSError("killed")

    monkeypatch.setattr(manifest.Manifest, "save", crash)
    with pytest.raises(OSError):
        merge_all(coll, small_rows=64, target_rows=64)
    monkeypatch.undo()
    again = Collection.open(tmp_path / "data", "x")
    ids, emb = _state(again)
    assert ids == before[0] and np.array_equal(emb, before[1])
    _commits(again, [1], 100)  # the next writer sweeps the merge's orphans
    assert sorted(p.name for p in again.root.iterdir() if p.name.startswith("shard-")) == sorted(
        s.file for s in again.manifest.shards
    )
    assert {f for f in files if f.startswith("shard-")} <= {p.name for p in again.root.iterdir()}


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from tests.test_merging import _commits
    from storage.collection import Collection
    from storage.merging import merge_tail
    coll = Collection.open(Path(sys.argv[1]), "k")
    start = coll.manifest.next_id
    while True:
        start = _commits(coll, [1], start)
        merge_tail(coll, small_rows=16, fanin=3)
        pass
    """
)


@pytest.mark.slow
def test_sigkill_during_commits_and_merges_loses_and_duplicates_nothing(tmp_path):
    data = tmp_path / "data"
    Collection.create(data, "k", model=MODEL)
    seed = int(os.environ.get("BLIPSEARCH_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    root = str(Path(__file__).resolve().parents[1])
    for _ in range(4):
        before = Collection.open(data, "k").manifest.next_id
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(data), root], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:  # started committing (imports are slow)
            if Collection.open(data, "k").manifest.next_id >= before + 3:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.5))  # then a random point: mid-commit, mid-merge, between
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, f"seed {seed}: {proc.stderr.read().decode()[-2000:]}"
    coll = Collection.open(data, "k")
    ids, emb = _state(coll)
    shas = coll.read_table(["sha256"]).column("sha256").to_pylist()
    assert ids == list(range(coll.manifest.next_id)), f"seed {seed}"  # none lost, none twice
    assert len(set(shas)) == len(shas) and len(ids) > 10, f"seed {seed}"
    for rid, vec in zip(ids, emb, strict=True):  # every record still holds its own vector
        assert np.allclose(vec, _rows(rid, 1)[1][0]), f"seed {seed}"
    index, covered = index_store.load(coll)
    assert index.ntotal == len(ids) and covered == [s.file for s in coll.manifest.shards]


class _FakeEmbedder:
    """Only what SearchEngine.open checks: the collection's model identity."""

    model_id = "fake"
    fingerprint = "f" * 16

    def embed_texts(self, texts):  # pragma: no cover - not used by these tests
        raise AssertionError("no model in these tests")


def test_uploads_coalesce_and_search_sees_every_upload(settings, blip_embedder):
    """Twenty one-image upload requests: shards stay few; a live engine finds each new image."""
    import io

    from indexer.uploads import Blob, index_blobs
    from service.indexing import new_image_collection
    from tests.helpers import make_image

    s = settings.model_copy(update={"small_shard_rows": 64, "merge_fanin": 4})
    coll = new_image_collection(s, "up", blip_embedder, False)
    engine = SearchEngine.open(coll, blip_embedder)
    for i in range(20):
        buf = io.BytesIO()
        make_image(500 + i, (48, 40)).save(buf, "PNG")
        out = index_blobs(
            s, Collection.open(s.data_dir, "up"), blip_embedder, [Blob(f"{i}.png", buf.getvalue(), "PNG")]
        )
        assert len(out.added) == 1
        engine.sync()
        rid = out.added[0][1]
        assert rid in engine.index.search(engine.index.vectors_of(rid), 1)[0].tolist()
    coll.reload()
    assert len(coll.manifest.shards) <= 4 + 3, [sh.rows for sh in coll.manifest.shards]
    assert [r for r in coll.read_table(["id"]).column("id").to_pylist()] == list(range(20))
