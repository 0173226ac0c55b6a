"""Readers of a manifest whose shards a merge removed after it was loaded read the newer manifest
instead of failing: records, tables, uris, embeddings, samples and filters, with a real merge
(two of them: merged parents outlive one later manifest) between the load and the read."""

from __future__ import annotations

import numpy as np
import pytest

from search import index_store
from search.engine import SearchEngine
from search.filters import Filters, allowed_ids
from storage.collection import Collection
from storage.merging import merge_all
from tests.test_merging import MODEL, _commits, _FakeEmbedder, _state


@pytest.fixture
def stale(tmp_path):
    """(a reader holding the first manifest, whose shard files are now all gone; the total)."""
    data = tmp_path / "data"
    writer = Collection.create(data, "v", model=MODEL)
    end = _commits(writer, [3, 2, 4, 1])
    reader = Collection.open(data, "v")
    old_files = [s.file for s in reader.manifest.shards]
    merge_all(writer, small_rows=64, target_rows=64)  # the parents are retired, still on disk
    end = _commits(writer, [2, 2], start=end)
    merge_all(writer, small_rows=64, target_rows=64)  # the first parents are removed now
    assert not any((reader.root / f).exists() for f in old_files)
    assert [s.file for s in reader.manifest.shards] == old_files  # the reader still holds the old manifest
    return reader, end


def test_records_and_lookups(stale):
    reader, end = stale
    got = reader.get_records([0, 5, end - 1])
    assert sorted(got) == [0, 5, end - 1]
    assert got[5]["uri"] == "/img/5.png"
    assert reader.locate(7) is not None


def test_tables_and_uris(stale):
    reader, end = stale
    assert reader.read_table(["id"]).column("id").to_pylist() == list(range(end))
    reader2_uris = reader.live_uris()
    assert len(reader2_uris) == end and reader2_uris["/img/3.png"][0] == 3


def test_embeddings(stale):
    reader, end = stale
    ids, emb = reader.all_embeddings()
    assert ids.tolist() == list(range(end)) and emb.shape == (end, MODEL["dim"])
    np.testing.assert_allclose(reader.embeddings_of([4]), emb[4:5], atol=0)


def test_samples(stale):
    reader, end = stale
    assert reader.sample_vectors(end + 5).shape == (end, MODEL["dim"])


def test_filters(stale):
    reader, _ = stale
    assert allowed_ids(reader, Filters(uri_prefix="/img/1")).tolist() == [1, 10, 11, 12, 13]


def test_dedup_hashes(stale):
    reader, end = stale
    assert len(reader.known_hashes()) == end


def test_an_index_catches_up_past_two_merges(tmp_path):
    """An engine's index sync loaded the manifest naming two new shards; two merges removed them
    before it read them: it goes on from the newer manifest, never a missing file."""
    data = tmp_path / "data"
    writer = Collection.create(data, "e", model=MODEL)
    end = _commits(writer, [100])  # large: never merged
    engine = SearchEngine.open(Collection.open(data, "e"), _FakeEmbedder())
    end = _commits(writer, [3, 1], start=end)
    engine.coll.reload()  # the manifest naming the two new shards, not yet read
    merge_all(writer, small_rows=64, target_rows=64)
    end = _commits(writer, [1], start=end)
    merge_all(writer, small_rows=64, target_rows=64)  # the new shards' files are gone now
    assert not (engine.coll.root / engine.coll.manifest.shards[1].file).exists()
    assert index_store.sync(engine.coll, engine.index)
    ids, emb = _state(Collection.open(data, "e"))
    assert engine.index.ntotal == end == len(ids)
    for rid, vec in zip(ids, emb, strict=True):
        assert engine.index.search(vec, 1)[0][0] == rid
