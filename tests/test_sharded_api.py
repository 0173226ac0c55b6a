"""The API over a sharded index: a shard that does not answer gives a 503, or with
BLIPSEARCH_SHARD_PARTIAL a flagged partial answer, never a silent loss; the serve command's
sharding flags are checked at the edge."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from cli.main import app as cli_app
from search.sharded import LocalShard, ShardedIndex, split
from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import write_images
from tests.test_sharded import _Stuck


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, blip_embedder):
    from blipsearch.config import Settings

    root = tmp_path_factory.mktemp("sharded_api")
    settings = Settings(data_dir=root / "data", batch_size=8, shard_size=4, jpeg_draft=False, precision="exact")
    write_images(root / "imgs", 10)
    index_paths(settings, [root / "imgs"], "photos", embedder=blip_embedder, progress=False)
    return settings


def _loader(stuck: _Stuck, settings):
    def load(coll: Collection) -> ShardedIndex:
        m = coll.manifest
        good = LocalShard.build(coll, split(m.shards, 2)[0])
        return ShardedIndex(
            [good, stuck],
            m.dim,
            m.vectors_per_item,
            ntotal=m.count,
            lookup=coll.embeddings_of,
            timeout_s=settings.shard_timeout_s,
            partial=settings.shard_partial,
        )

    return load


@pytest.mark.parametrize("partial", [False, True])
def test_a_missing_shard_is_a_503_or_a_flagged_partial_answer(indexed, partial):
    settings = indexed.model_copy(update={"shard_timeout_s": 0.3, "shard_partial": partial})
    stuck = _Stuck()
    body = {"query": "a red circle", "collection": "photos", "k": 10}
    try:
        api = create_app(settings, index_loader=_loader(stuck, settings))
        with TestClient(api, raise_server_exceptions=False) as c:
            r = c.post("/v1/search/text", json=body)
            knn = c.post("/knn-service", json={"text": "a red circle", "indice_name": "photos", "num_images": 3})
    finally:
        stuck.release.set()
    coll = Collection.open(settings.data_dir, "photos")
    first_half = {i for s in split(coll.manifest.shards, 2)[0] for i in range(s.min_id, s.max_id + 1)}
    if not partial:
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "shard_unavailable" and "[1]" in r.json()["detail"]
        assert knn.status_code == 503
        return
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["partial"] is True and out["missing_shards"] == [1]
    assert out["results"] and {h["id"] for h in out["results"]} <= first_half
    assert len(out["results"]) == len(first_half)  # k=10 asked, only the answering shard's records came
    assert knn.status_code == 200, knn.text  # clip-retrieval's route: the flag is a header there
    assert knn.headers["X-Missing-Shards"] == "1"
    assert {h["id"] for h in knn.json()} <= first_half


def test_serve_flags_are_checked(tmp_path):
    runner = CliRunner()
    for args, needle in (
        (["serve", "--shards", "2"], "need --runner ray"),
        (["serve", "--runner", "bogus"], "Unknown --runner"),
        (["serve", "--runner", "ray", "--workers", "2"], "--router-replicas"),
        (["serve", "--runner", "ray", "--shards", "0"], "--shards must be between 1"),
        (["serve", "--runner", "ray", "--address", "127.0.0.1:1"], "No Ray cluster answers at 127.0.0.1:1"),
    ):
        res = runner.invoke(cli_app, [*args, "--data-dir", str(tmp_path)])
        assert res.exit_code == 2, (args, res.output)
        assert needle in res.output and "Traceback" not in res.output, res.output
