"""The catalog and keyword search on a real PostgreSQL (started by scripts/test.sh when possible)."""

from __future__ import annotations

import os
import uuid

import pytest

from storage.catalog import Catalog
from storage.collection import Collection
from storage.fulltext import KeywordIndex
from tests.helpers import write_images

URL = os.environ.get("BLIPSEARCH_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="BLIPSEARCH_TEST_POSTGRES_URL not set (no PostgreSQL server)")


def test_catalog_collections_and_jobs():
    cat = Catalog(URL)
    name = f"c{uuid.uuid4().hex[:8]}"
    model = {"model_id": "m", "fingerprint": "f", "dim": 256, "vectors_per_image": 1}
    cat.upsert_collection(name, "images", model)
    cat.upsert_collection(name, "images", model)  # idempotent
    assert name in [c.name for c in cat.list_collections()]
    job = cat.create_job("index", name, "m", {"paths": ["/x"]})
    cat.update_job(job, state="succeeded", counts={"added": 3}, failures=[{"path": "/y", "error": "bad"}])
    got = cat.get_job(job)
    assert got.state == "succeeded" and got.counts == {"added": 3} and got.failures[0]["error"] == "bad"
    cat.delete_collection(name)
    assert name not in [c.name for c in cat.list_collections()]


def test_keyword_search_on_postgres(tmp_path, blip_embedder):
    from blipsearch.config import Settings
    from service.indexing import index_paths

    name = f"k{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path / "d", database_url=URL, batch_size=8)
    write_images(tmp_path / "in", 4)
    index_paths(settings, [tmp_path / "in"], name, embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, name)
    caps = ["Two dogs running on the beach", "a red car in the city", "a dog under a tree", "red sofa and a cat"]
    coll.update_columns(coll.manifest.shards[0].file, {i: {"caption": c} for i, c in enumerate(caps)})
    kw = KeywordIndex(Catalog(URL).engine)
    assert kw.dialect == "postgresql"

    def ids(q: str) -> set[int]:
        return {rid for rid, _ in kw.search(coll, q, 10)}

    assert ids("dog") == {0, 2} and ids("DOGS") == {0, 2} and ids("running") == {0}
    assert ids('"red car"') == {1} and ids("red") == {1, 3} and ids("giraffe") == set()
    kw.drop(name)


def test_keys_jobs_and_moderation_results_on_postgres():
    from blipsearch.errors import UnauthorizedError
    from moderation.checks import CategoryScore, CheckResult
    from moderation.policy import parse_policy
    from moderation.store import DecisionCache, effective_decisions, query_results, save_results
    from storage.api_keys import create_key, revoke_key, verify

    cat = Catalog(URL)
    key, info = create_key(cat, "pg", "write")
    assert verify(cat, key).id == info.id
    revoke_key(cat, info.id)
    with pytest.raises(UnauthorizedError):
        verify(cat, key)
    job = cat.create_job("index", "x", None, {}, state="pending")
    assert cat.transition(job, ("pending",), "cancelling") and not cat.transition(job, ("pending",), "running")

    name = f"m{uuid.uuid4().hex[:8]}"
    pol = parse_policy(
        {"name": "p", "version": 1, "categories": [
            {"name": "a", "prompts": ["x"], "itc_threshold": 0, "itm_threshold": 0.5, "action": "block"}]}
    )  # fmt: skip
    res = CheckResult("block", [CategoryScore("a", "block", 0.1, "x", True, 0.9, "x", True)], [{"action": "block"}])
    models = {"itc": "m", "itm": "m"}
    assert save_results(cat, name, pol, models, [(1, res), (2, res)]) == 2
    assert save_results(cat, name, pol, models, [(1, res), (3, res)]) == 1  # (1, p, v1) exists: not rewritten
    assert [r["id"] for r in query_results(cat, name, "block")] == [1, 2, 3]
    assert effective_decisions(cat, name) == {1: "block", 2: "block", 3: "block"}
    assert DecisionCache(cat, name).ids({"block"}).tolist() == [1, 2, 3]
