"""kill -9 at the write steps of every writing command (storage/faults.py counts them): index,
uploads with small-shard merging, compact, reembed, caption, moderate. After each kill the
collection opens and searches, every acknowledged record is there exactly once, and a re-run
finishes with nothing lost or duplicated. A few steps of each are sampled (evenly, the first
and last included); BLIPSEARCH_FAULT_SWEEP=all kills at every one."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from service.indexing import index_paths
from storage.collection import Collection
from tests.fault_tools import cli, consistent, count_steps, in_process, kill_sweep
from tests.helpers import write_images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("fault-images"), 10)


@pytest.fixture(scope="module")
def base(tmp_path_factory, images, blip_embedder) -> Path:
    """A data dir with collection ``c``: 10 images in shards of 3, two of them deleted."""
    from blipsearch.config import Settings

    data = tmp_path_factory.mktemp("fault-base") / "data"
    s = Settings(data_dir=data, batch_size=4, shard_size=3, decode_workers=1, jpeg_draft=False, precision="exact")
    index_paths(s, [images[0].parent], "c", embedder=blip_embedder, progress=False)
    coll = Collection.open(data, "c")
    coll.delete(sorted(coll.read_table(["id"]).column("id").to_pylist())[:2])
    return data


@pytest.fixture
def env(monkeypatch, tiny_models):
    monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
    monkeypatch.setenv("BLIPSEARCH_PRECISION", "exact")


def _shas(paths) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_kill_during_index(tmp_path, images, env, blip_embedder):
    expected = _shas(images)
    (tmp_path / "empty").mkdir()
    args = ["index", str(images[0].parent), "-c", "c", "--batch-size", "4", "--shard-size", "3", "--workers", "1"]

    def check(d: Path, final: bool) -> None:
        if not final and not Collection.exists(d, "c"):
            return
        state = consistent(d, "c", [blip_embedder])
        assert state["shas"] <= expected
        if final:
            assert state["shas"] == expected

    kill_sweep(tmp_path / "empty", tmp_path, lambda d: args, check)


def test_kill_during_uploads_with_merging(tmp_path, images, env, blip_embedder):
    expected = _shas(images)
    (tmp_path / "empty").mkdir()

    def args(d: Path) -> list[str]:
        return ["-m", "tests.fault_upload_driver", str(d), str(images[0].parent), str(d / "acked")]

    def check(d: Path, final: bool) -> None:
        acked = set((d / "acked").read_text().split()) if (d / "acked").exists() else set()
        if not final and not Collection.exists(d, "u"):
            assert not acked
            return
        state = consistent(d, "u", [blip_embedder])
        assert acked <= state["shas"] <= expected  # every acknowledged upload is kept
        if final:
            assert state["shas"] == expected
            assert len(state["manifest"].shards) < len(images)  # merging ran

    kill_sweep(tmp_path / "empty", tmp_path, args, check, k=5)


def test_kill_during_compact(tmp_path, base, env, blip_embedder):
    before = consistent(base, "c", [blip_embedder])

    def check(d: Path, final: bool) -> None:
        state = consistent(d, "c", [blip_embedder])
        assert state["ids"] == before["ids"] and state["shas"] == before["shas"]
        if final:
            assert state["manifest"].deleted_count == 0

    kill_sweep(base, tmp_path, lambda d: ["compact", "-c", "c"], check)


def test_kill_during_reembed(tmp_path, base, env, blip_embedder, blip2_embedder, tiny_models):
    before = consistent(base, "c", [blip_embedder])

    def check(d: Path, final: bool) -> None:
        state = consistent(d, "c", [blip_embedder, blip2_embedder])
        assert state["ids"] == before["ids"] and state["shas"] == before["shas"]
        if final:
            assert state["manifest"].model_fingerprint == blip2_embedder.fingerprint

    kill_sweep(base, tmp_path, lambda d: ["reembed", "-c", "c", "--model", str(tiny_models["blip2-itm"])], check)


def test_reembed_killed_after_its_swap_is_finished_by_a_re_run(tmp_path, base, env, blip_embedder, tiny_models):
    """Killed between the swap and its last catalog commits (the old version's mark, the catalog
    row, the job), a re-run finishes that bookkeeping instead of refusing the collection as done."""
    from blipsearch.config import Settings
    from storage.catalog import open_catalog

    args = lambda d: ["reembed", "-c", "c", "--model", str(tiny_models["blip2-itm"])]  # noqa: E731
    first = tmp_path / "count"
    shutil.copytree(base, first, symlinks=True)
    n = count_steps(args(first), first, tmp_path / "count.log")
    d = tmp_path / "killed"
    shutil.copytree(base, d, symlinks=True)
    killed = cli(args(d), d, {"BLIPSEARCH_FAULT_KILL_AT": str(n - 1)})  # before the job's final commit
    assert killed.returncode == -9
    in_process(args(d), d)
    jobs = [j for j in open_catalog(Settings(data_dir=d).catalog_url()).list_jobs("c") if j.kind == "reembed"]
    assert [j.state for j in jobs] == ["succeeded"]
    in_process_refused = cli(args(d), d)  # now it is done: a further re-run is refused, in one line
    assert in_process_refused.returncode == 2
    assert "already embedded" in in_process_refused.stderr + in_process_refused.stdout


def test_kill_during_caption(tmp_path, base, env, blip_embedder, tiny_models):
    before = consistent(base, "c", [blip_embedder])
    args = ["caption", "-c", "c", "--caption-model", str(tiny_models["blip-caption"]), "--max-new-tokens", "5"]

    def check(d: Path, final: bool) -> None:
        state = consistent(d, "c", [blip_embedder])
        assert state["ids"] == before["ids"] and state["shas"] == before["shas"]
        if final:
            captions = Collection.open(d, "c").read_table(["caption"]).column("caption").to_pylist()
            assert all(c for c in captions)

    kill_sweep(base, tmp_path, lambda d: args, check)


def test_kill_during_moderate(tmp_path, base, env, blip_embedder):
    from blipsearch.config import Settings
    from moderation.store import query_results
    from storage.catalog import open_catalog
    from tests.test_moderation import policy_dict

    policy = tmp_path / "p.json"
    policy.write_text(json.dumps(policy_dict()))
    before = consistent(base, "c", [blip_embedder])

    def check(d: Path, final: bool) -> None:
        state = consistent(d, "c", [blip_embedder])
        assert state["ids"] == before["ids"]

        rows = query_results(open_catalog(Settings(data_dir=d).catalog_url()), "c", limit=10_000)
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)) and set(ids) <= state["ids"]  # each record checked at most once
        if final:
            assert set(ids) == state["ids"]

    kill_sweep(base, tmp_path, lambda d: ["moderate", "run", "-c", "c", "--policy", str(policy)], check)
