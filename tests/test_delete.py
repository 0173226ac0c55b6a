"""Tombstone deletes, index removal, live engine sync, and compaction."""

from __future__ import annotations

import numpy as np
import pytest

from search import index_store
from search.engine import SearchEngine
from service.indexing import index_paths
from storage.collection import Collection
from storage.compaction import compact
from tests.helpers import assert_same_ranking, brute_force_scores, write_images


def _ids(result) -> list[int]:
    return [h.id for h in result.hits]


@pytest.mark.parametrize("fixture", ["blip_embedder", "blip2_embedder"])
def test_deleted_records_are_never_returned(request, fixture, settings, tmp_path):
    embedder = request.getfixturevalue(fixture)
    settings.shard_size = settings.batch_size = 8
    write_images(tmp_path / "a", 24)
    index_paths(settings, [tmp_path / "a"], "c", embedder=embedder, progress=False)
    coll = Collection.open(settings.data_dir, "c")
    engine = SearchEngine.open(coll, embedder)  # opened before the delete: must catch up live
    all_ids, all_emb = coll.all_embeddings()
    q = embedder.embed_texts(["a red circle"])[0]
    before = _ids(engine.search_text("a red circle", k=24))
    victims = before[:5]
    deleted, unknown = Collection.open(settings.data_dir, "c").delete([*victims, 999, victims[0]])
    assert deleted == sorted(victims) and unknown == [999]
    assert engine.sync() is True
    after = _ids(engine.search_text("a red circle", k=24))
    assert not set(after) & set(victims) and len(after) == 19
    live = ~np.isin(all_ids, victims)
    assert_same_ranking(after, all_ids[live], brute_force_scores(q, all_emb[live]), 19)  # up to float ties
    # Every read path skips tombstones; a fresh load has exactly the live vectors.
    coll.reload()
    assert coll.manifest.count == 19 and coll.get_records(victims) == {}
    assert sorted(coll.read_table(["id"]).column("id").to_pylist()) == sorted(all_ids[live].tolist())
    index, _ = index_store.load(coll)
    assert index.ntotal == 19 * embedder.vectors_per_image
    with pytest.raises(Exception, match="no record"):
        engine.search_similar(victims[0])


def test_deleted_image_can_be_added_again_with_a_new_id(settings, blip_embedder, tmp_path):
    write_images(tmp_path / "a", 6)
    index_paths(settings, [tmp_path / "a"], "c", embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "c")
    uri = coll.get_records([2])[2]["uri"]
    coll.delete([2])
    report = index_paths(settings, [tmp_path / "a"], "c", embedder=blip_embedder, progress=False)
    assert report.added == 1 and report.skipped_duplicates == 5 and report.new_ids == [6]
    coll.reload()
    assert coll.get_records([6])[6]["uri"] == uri and coll.manifest.count == 6
    assert coll.manifest.index is not None and coll.manifest.index.ntotal == 6


def test_compact_drops_rows_keeps_ids_and_results(settings, blip_embedder, tmp_path):
    settings.shard_size = settings.batch_size = 5
    write_images(tmp_path / "a", 15)
    index_paths(settings, [tmp_path / "a"], "c", embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "c")
    coll.delete([0, 1, 2, 3, 4, 7])  # the whole first shard and one row of the second
    index_store.refresh(coll)
    engine = SearchEngine.open(coll, blip_embedder)
    before = engine.search_text("a blue square", k=9)
    old_files = {s.file for s in coll.manifest.shards}
    report = compact(coll)
    assert report.rows_removed == 6 and report.shards_removed == 1 and report.shards_rewritten == 1
    coll.reload()
    assert len(coll.manifest.shards) == 2 and coll.manifest.deleted_count == 0
    assert not any((coll.root / f).exists() for f in old_files - {s.file for s in coll.manifest.shards})
    assert coll.manifest.index is not None and set(coll.manifest.index.covered_shards) == {
        s.file for s in coll.manifest.shards
    }
    assert sorted(coll.read_table(["id"]).column("id").to_pylist()) == [5, 6, 8, 9, 10, 11, 12, 13, 14]
    assert engine.sync() is True  # the live engine notices the compaction and reloads
    after = engine.search_text("a blue square", k=9)
    assert _ids(after) == _ids(before)
    np.testing.assert_allclose([h.score for h in after.hits], [h.score for h in before.hits], atol=1e-6)
    fresh, covered = index_store.load(coll)
    assert fresh.ntotal == 9 and covered == [s.file for s in coll.manifest.shards]
    assert compact(coll).rows_removed == 0  # idempotent
