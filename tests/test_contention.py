"""Concurrent writers on one collection: a second re-embed is refused while one runs, and no
commit can list a shard twice."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from blipsearch.errors import ConflictError, StorageError
from indexer.reembed import reembed
from service.indexing import index_paths
from storage.collection import Collection
from storage.copying import commit_copied_shard
from tests.helpers import write_images


@pytest.fixture
def small_shards(settings):
    return settings.model_copy(update={"shard_size": 4, "decode_mode": "thread"})


def test_second_reembed_is_refused_while_one_runs(small_shards, blip_embedder, blip2_embedder, tmp_path):
    s = small_shards
    index_paths(s, [write_images(tmp_path / "in", 12)[0].parent], "c", embedder=blip_embedder, progress=False)
    errors: list[ConflictError] = []

    def second(_: int) -> None:
        if errors:
            return
        with pytest.raises(ConflictError, match="re-embed of collection 'c' is already running") as info:
            reembed(s, "c", "blip2", embedder=blip2_embedder, progress=False)
        errors.append(info.value)

    payload = reembed(s, "c", "blip2", embedder=blip2_embedder, progress=False, on_shard=second)
    assert errors and errors[0].exit_code == 4
    m = Collection.open(s.data_dir, "c").manifest
    files = [sh.file for sh in m.shards]
    assert len(files) == len(set(files)) and m.count == 12 == payload["records"]
    ids = Collection.open(s.data_dir, "c").read_table(["id"]).column("id").to_pylist()
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 12


def test_a_shard_is_never_committed_twice(small_shards, blip_embedder, tmp_path):
    s = small_shards
    index_paths(s, [write_images(tmp_path / "in", 4)[0].parent], "d", embedder=blip_embedder, progress=False)
    coll = Collection.open(s.data_dir, "d")
    shard = coll.manifest.shards[0]
    table = pa.table({"id": pa.array(range(shard.min_id, shard.max_id + 1), pa.int64())})
    emb = np.zeros((table.num_rows, coll.manifest.dim), np.float32)
    with pytest.raises(ConflictError, match="already copied"):
        commit_copied_shard(coll, shard, table, emb, None)  # its file is listed already
    m = coll.reload()
    m.shards.append(m.shards[0].model_copy())
    with pytest.raises(StorageError, match="twice"):
        m.save(coll.root / "manifest.json")
    assert len(Collection.open(s.data_dir, "d").manifest.shards) == 1


def test_known_hashes_survive_a_shard_merged_away_meanwhile(small_shards, blip_embedder, tmp_path):
    from storage.merging import merge_all

    s = small_shards
    index_paths(s, [write_images(tmp_path / "in", 8)[0].parent], "h", embedder=blip_embedder, progress=False)
    reader = Collection.open(s.data_dir, "h")
    stale = reader.manifest.model_copy(deep=True)  # what a reader loaded just before the merges
    expected = reader.known_hashes()
    writer = Collection.open(s.data_dir, "h")
    for i in range(2):  # two merges: the first one's parents are removed by the second
        index_paths(
            s,
            [write_images(tmp_path / f"more{i}", 1, start=50 + i)[0].parent],
            "h",
            embedder=blip_embedder,
            progress=False,
        )
        merge_all(writer, target_rows=1000, small_rows=1000)
    assert not (reader.root / stale.shards[0].file).exists()
    real, calls = Collection.reload, []

    def reload_stale(self):  # the first reload returns the manifest of before the merges
        calls.append(1)
        if len(calls) == 1:
            self.manifest = stale.model_copy(deep=True)
            return self.manifest
        return real(self)

    reader._known_hashes = None
    reader.reload = reload_stale.__get__(reader)
    hashes = reader.known_hashes()  # before: FileNotFoundError from a shard merged away
    assert expected < hashes and len(hashes) == 10 and len(calls) >= 2


def test_ray_serve_refuses_reservations_the_cluster_cannot_place(settings):
    from api.ray_serve import check_capacity
    from blipsearch.errors import ConfigError

    with pytest.raises(ConfigError, match=r"BLIPSEARCH_RAY_SHARD_CPUS=1.*has 2") as info:
        check_capacity(settings, shards=2, replicas=1, router_replicas=1, cpus=2.0)  # 3 CPUs on a 2-CPU machine
    assert info.value.exit_code == 2
    fits = settings.model_copy(update={"ray_shard_cpus": 0.5, "ray_router_cpus": 0.5})
    check_capacity(fits, shards=2, replicas=1, router_replicas=1, cpus=2.0)


@pytest.mark.parametrize("name", ["catalog.db", "policies", "a..b"])
def test_create_collection_checks_the_name_before_loading_a_model(tmp_path, name):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from blipsearch.config import Settings
    from storage.api_keys import create_key
    from storage.catalog import open_catalog

    settings = Settings(data_dir=tmp_path / "data", model=str(tmp_path / "no-model"))  # loading it would 503
    key = create_key(open_catalog(settings.catalog_url()), "w", "write")[0]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post("/v1/collections", json={"name": name}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_input", r.text


def test_small_shard_merging_waits_for_a_running_reembed(small_shards, blip_embedder, blip2_embedder, tmp_path):
    from storage.merging import merge_tail

    s = small_shards
    index_paths(s, [write_images(tmp_path / "in", 8)[0].parent], "m", embedder=blip_embedder, progress=False)
    merged: list[int] = []
    one = s.model_copy(update={"shard_size": 1})

    def during(_: int) -> None:  # uploads commit small shards meanwhile, and would merge them
        if merged:
            return
        index_paths(one, [write_images(tmp_path / "up", 3, start=40)[0].parent], "m", embedder=blip_embedder,
                    progress=False)  # fmt: skip
        merged.append(merge_tail(Collection.open(s.data_dir, "m"), small_rows=1024, fanin=2).shards_merged)

    payload = reembed(s, "m", "blip2", embedder=blip2_embedder, progress=False, on_shard=during)
    assert merged == [0] and payload["records"] == 11  # the re-embed finished with every record
    assert merge_tail(Collection.open(s.data_dir, "m"), small_rows=1024, fanin=2).shards_merged > 0  # free again


def test_writes_after_a_reembed_never_reuse_ids_or_shard_names(small_shards, blip_embedder, blip2_embedder, tmp_path):
    s = small_shards
    index_paths(s, [write_images(tmp_path / "in", 8)[0].parent], "n", embedder=blip_embedder, progress=False)
    added: list[int] = []

    def during(_: int) -> None:  # the live version takes writes while it is re-embedded
        if not added:
            more = write_images(tmp_path / "during", 5, start=60)[0].parent
            added.append(index_paths(s, [more], "n", embedder=blip_embedder, progress=False).added)

    reembed(s, "n", "blip2", embedder=blip2_embedder, progress=False, on_shard=during)
    after = index_paths(s, [write_images(tmp_path / "after", 3, start=90)[0].parent], "n", embedder=blip2_embedder,
                        progress=False)  # fmt: skip
    assert added == [5] and after.added == 3
    coll = Collection.open(s.data_dir, "n")
    ids = coll.read_table(["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 16 == coll.manifest.count
