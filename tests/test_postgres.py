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
    from indexer.job import index_paths

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
