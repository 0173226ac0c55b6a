"""Duplicate tiers over a real FAISS index (flat and IVF), keepers, and stacks in search."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from search import index_store
from search.duplicates import TIERS, DuplicateOptions, _classify, _Records, find_duplicates
from search.engine import SearchEngine
from search.plan import select
from service import duplicates as svc
from service.syncing import sync_paths
from storage import stacks
from storage.collection import Collection
from tests.helpers import make_image, synthetic_rows

DIM = 32
MODEL = {"model_id": "synthetic", "fingerprint": "d" * 16, "family": "blip", "dim": DIM, "vectors_per_image": 1}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _near(v: np.ndarray, sim: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at cosine ``sim`` from unit ``v``."""
    r = rng.normal(size=v.shape)
    r -= (r @ v) * v
    return _unit(sim * v + math.sqrt(1 - sim**2) * _unit(r))


def _pdq(bits_flipped: int, base: int = 0) -> str:
    h = bytearray(np.random.default_rng(base).integers(0, 256, 32, dtype=np.uint8).tobytes())
    for b in range(bits_flipped):
        h[b // 8] ^= 1 << (b % 8)
    return h.hex()


def _library(tmp_path, spec: str | None) -> Collection:
    rng = np.random.default_rng(0)
    n = 400
    vecs = _unit(rng.normal(size=(n, DIM)))  # random: pairwise similarity ~N(0, 1/sqrt(32)), far below 0.85
    vecs[1] = _near(vecs[0], 0.995, rng)  # re-encoded copy of 0 (PDQ close, below)
    vecs[3] = _near(vecs[2], 0.95, rng)  # near-duplicates
    vecs[5] = _near(vecs[4], 0.99, rng)  # very similar but PDQ far: near, not re-encoded
    rows = synthetic_rows(0, n)
    rows["width"] = [100] * n
    rows["height"] = [100] * n
    rows["width"][1] = rows["height"][1] = 400  # the larger one: the keeper
    rows["format"] = ["jpeg"] * n
    rows["format"][0] = "heic"
    rows["pdq_hash"] = [None] * n
    rows["pdq_hash"][0], rows["pdq_hash"][1] = _pdq(0), _pdq(6)
    rows["pdq_hash"][4], rows["pdq_hash"][5] = _pdq(0, 4), _pdq(120, 4)
    coll = Collection.create(tmp_path, "d", model=MODEL)
    coll.append_aligned(rows, vecs)
    index_store.refresh(coll, spec=spec)
    return coll


@pytest.mark.parametrize("spec", [None, "IVF4,Flat"])
def test_tiers_from_range_search_equal_the_built_groups(tmp_path, spec):
    coll = _library(tmp_path, spec)
    index, _ = index_store.load(coll)
    if spec:
        index.defaults["nprobe"] = 4  # every list: the range search is exact here
    out = find_duplicates(coll, index, DuplicateOptions(), TIERS)
    got = {(g["tier"], tuple(m["id"] for m in g["members"])) for g in out["groups"]}
    assert got == {("reencoded", (0, 1)), ("near", (2, 3)), ("near", (4, 5))}
    g = next(g for g in out["groups"] if g["tier"] == "reencoded")
    assert g["keeper"] == 1 and g["keeper_why"].startswith("largest")
    assert g["scores"]["max_pdq_distance"] == 6 and g["scores"]["min_similarity"] == pytest.approx(0.995, abs=1e-3)
    assert "burst" in out["skipped"] and "exact" in out["skipped"]
    # a tombstoned record leaves its group
    coll.delete([3])
    out = find_duplicates(coll, index_store.load(coll)[0], DuplicateOptions(), TIERS)
    assert {g["group"] for g in out["groups"]} == {"reencoded-0", "near-4"}


@pytest.mark.parametrize(
    "pdq_equal,expected",
    [
        # 2 s apart: a burst (though similar enough to be near); same time: near; 100 s: near; no times: near
        (False, ["burst", "near", "near", "near"]),
        # equal PDQ hashes: copies where one shot (or no time) is known; two capture times stay two shots
        (True, ["burst", "reencoded", "near", "reencoded"]),
    ],
)
def test_burst_is_two_shots_within_seconds_never_a_copy(pdq_equal, expected):
    rec = _Records.__new__(_Records)
    rec.taken = np.array([0.0, 2.0, 2.0, 100.0, math.nan, math.nan])
    rec.has_pdq = np.full(6, pdq_equal)
    rec.pdq = np.zeros((6, 32), np.uint8)
    a, b = np.array([0, 1, 0, 4]), np.array([1, 2, 3, 5])
    sims = np.array([0.98, 0.98, 0.98, 0.98], np.float32)
    assert [TIERS[t] for t in _classify(rec, a, b, sims, DuplicateOptions())] == expected


def test_sync_exact_copies_stack_and_search_shows_the_keeper(settings, blip_embedder, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(1, 5):
        make_image(i, (160, 120)).save(lib / f"p{i}.png")
    large = make_image(0, (320, 240))
    large.save(lib / "p0_large.jpg", quality=95)
    large.resize((160, 120)).save(lib / "p0.png")  # the same picture, resized and re-encoded
    shutil.copy(lib / "p3.png", lib / "p3_copy.png")
    sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    # the tiny random model's similarities say little: a low ITC floor, PDQ decides; near only for equal vectors
    settings.duplicate_reencoded_similarity, settings.duplicate_near_similarity = 0.5, 1.0
    res = CliRunner().invoke(
        app, ["duplicates", "--collection", "lib", "--data-dir", str(settings.data_dir), "--json"], env=_env(settings)
    )
    assert res.exit_code == 0, res.output
    by_uri = Collection.open(settings.data_dir, "lib").live_uris()
    out = svc.duplicates(settings, "lib")
    exact = [g for g in out["groups"] if g["tier"] == "exact"]
    assert len(exact) == 1 and {m["path"] for m in exact[0]["members"]} == {
        str((lib / "p3.png").resolve()),
        str((lib / "p3_copy.png").resolve()),
    }
    re = [g for g in out["groups"] if g["tier"] == "reencoded"]
    big, small = by_uri[str((lib / "p0_large.jpg").resolve())][0], by_uri[str((lib / "p0.png").resolve())][0]
    assert [sorted(m["id"] for m in g["members"]) for g in re] == [sorted([big, small])]
    assert re[0]["keeper"] == big
    assert json.loads(res.output)["counts"]["reencoded"] >= 1

    coll = Collection.open(settings.data_dir, "lib")
    engine = SearchEngine.open(coll, blip_embedder)
    every = {h.id for h in engine.search_text("a picture", k=10).hits}
    assert {big, small} <= every
    svc.stack(settings, "lib", group=re[0]["group"])
    assert small in select(coll, engine.index, None, None).excluded  # type: ignore[union-attr]
    hits = {h.id for h in engine.search_text("a picture", k=10).hits}
    assert big in hits and small not in hits and hits == every - {small}
    assert svc.stack_of(settings, "lib", big)["members"] == [small]  # findable from the keeper
    assert coll.get_records([small])  # still stored
    assert svc.duplicates(settings, "lib")["groups"][1]["stacked"] is True
    svc.unstack(settings, "lib", group=re[0]["group"])
    assert {h.id for h in engine.search_text("a picture", k=10).hits} == every
    assert stacks.load(coll.root) == {}


def test_duplicates_bad_input_is_one_line(settings, tmp_path):
    coll = _library(settings.data_dir, None)
    env = _env(settings)
    r = CliRunner().invoke(app, ["duplicates", "-c", "d", "--stack", "near-999", "--data-dir", str(settings.data_dir)])
    assert r.exit_code != 0 and "No duplicate group" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["duplicates", "-c", "d", "--tier", "blurry", "--data-dir", str(settings.data_dir)])
    assert r.exit_code == 2 and "Unknown tier" in r.output
    r = CliRunner().invoke(
        app, ["duplicates", "-c", "d", "--unstack", "7", "--data-dir", str(settings.data_dir)], env=env
    )
    assert r.exit_code != 0 and "keeps no stack" in r.output
    assert coll.manifest.count == 400


def _env(settings) -> dict[str, str]:
    return {
        "BLIPSEARCH_DUPLICATE_REENCODED_SIMILARITY": str(settings.duplicate_reencoded_similarity),
        "BLIPSEARCH_DUPLICATE_NEAR_SIMILARITY": str(settings.duplicate_near_similarity),
    }
