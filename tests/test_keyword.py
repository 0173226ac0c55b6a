"""Keyword (full-text) and hybrid search, and image→text over captions."""

from __future__ import annotations

import pytest

from blipsearch.errors import InvalidInputError
from rerank.fusion import rrf
from service.engines import open_engine
from service.indexing import index_paths
from storage.catalog import open_catalog
from storage.collection import Collection
from storage.fulltext import KeywordIndex, fts5_query
from tests.helpers import make_image, write_images

CAPTIONS = [
    "Two dogs running on the beach",
    "a red car parked on a city street",
    "A dog sleeping under a tree",
    "children playing football in the park",
    "a cat sitting on a red sofa",
    "sunset over the sea",
]


@pytest.fixture
def captioned(settings, blip_embedder, tmp_path):
    write_images(tmp_path / "in", len(CAPTIONS))
    index_paths(settings, [tmp_path / "in"], "c", embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "c")
    shard = coll.manifest.shards[0].file
    coll.update_columns(shard, {i: {"caption": c, "caption_model": "manual"} for i, c in enumerate(CAPTIONS)})
    return coll


def _kw(settings, coll, q, k=10):
    return [rid for rid, _ in KeywordIndex(open_catalog(settings.catalog_url()).engine).search(coll, q, k)]


def test_keyword_stemming_case_phrases_and_no_match(settings, captioned):
    assert set(_kw(settings, captioned, "dog")) == {0, 2}  # "dogs" stems to "dog"
    assert set(_kw(settings, captioned, "DOGS")) == {0, 2}  # case-insensitive
    assert _kw(settings, captioned, "run") == [0]  # running → run
    assert set(_kw(settings, captioned, "red")) == {1, 4}
    assert _kw(settings, captioned, '"red car"') == [1]  # phrase
    assert _kw(settings, captioned, '"car red"') == []  # phrase order matters
    assert _kw(settings, captioned, "red sofa") == [4]  # all words must match
    assert _kw(settings, captioned, "giraffe") == []
    assert set(_kw(settings, captioned, 'dog" * ( ^')) == {0, 2}  # FTS syntax is neutralised, not an error
    assert _kw(settings, captioned, "dog OR giraffe") == []  # OR is a word here, and must match too
    with pytest.raises(InvalidInputError):
        _kw(settings, captioned, "   ")


def test_keyword_index_follows_caption_changes(settings, captioned):
    assert _kw(settings, captioned, "giraffe") == []
    captioned.update_columns(captioned.manifest.shards[0].file, {3: {"caption": "a giraffe eating leaves"}})
    assert _kw(settings, captioned, "giraffe") == [3]
    assert _kw(settings, captioned, "football") == []


def test_fts5_query_quotes_every_token():
    assert fts5_query('red "big car" NOT x*') == '"red" "big car" "not" "x"'


def test_rrf_puts_an_item_first_in_both_lists_first():
    fused = rrf([[5, 1, 2, 3], [5, 3, 9]])
    assert fused[0][0] == 5 and fused[0][1] == pytest.approx(2 / 61)
    assert [i for i, _ in fused][:2] == [5, 3]  # 3 appears in both lists, beating single-list items
    assert rrf([[1, 2], [2, 1]], k=60)[0][0] == 1  # equal RRF: best single rank, then id


def test_hybrid_search_and_rerank(settings, blip_embedder, captioned):
    engine = open_engine(settings, "c", embedder=blip_embedder, rerank=True)
    kw = engine.search_text("dog", 5, mode="keyword")
    assert {h.id for h in kw.hits} == {0, 2}
    vec = engine.search_text("dog", 6, mode="vector")
    top_vec = vec.hits[0].id
    hybrid = engine.search_text("dog", 6, mode="hybrid")
    fused = rrf([[h.id for h in vec.hits], [h.id for h in kw.hits]])
    assert [h.id for h in hybrid.hits] == [i for i, _ in fused][:6]
    if top_vec in {0, 2}:  # first in the vector list and in the keyword list → first overall
        assert hybrid.hits[0].id == top_vec
    reranked = engine.search_text("dog", 3, mode="hybrid", rerank=True, rerank_k=6)
    assert len(reranked.hits) == 3 and all(h.itm_score is not None for h in reranked.hits)
    # ITC is the true cosine for every candidate, keyword-only hits included.
    q = blip_embedder.embed_texts(["dog"])[0]
    _, emb = captioned.all_embeddings()
    for h in reranked.hits:
        assert h.itc_score == pytest.approx(float(emb[h.id] @ q), abs=1e-5)
    with pytest.raises(InvalidInputError):
        engine.search_text("dog", 3, mode="fuzzy")


def test_image_to_captions_deduplicated(settings, blip_embedder, captioned):
    shard = captioned.manifest.shards[0].file
    captioned.update_columns(shard, {5: {"caption": "two DOGS running on the beach "}})  # duplicate of #0
    engine = open_engine(settings, "c", embedder=blip_embedder)
    res = engine.captions_for_image(make_image(0), 10)
    caps = [h.record["caption"].strip().lower() for h in res.hits]
    assert len(caps) == len(set(caps)) == 5
    assert res.hits[0].id == 0  # the query image itself is the nearest; its caption comes first


def test_deleted_records_leave_the_keyword_index(settings, captioned):
    assert set(_kw(settings, captioned, "dog")) == {0, 2}
    captioned.delete([2])
    captioned.reload()
    assert _kw(settings, captioned, "dog") == [0]  # re-ingested because the shard has a new tombstone
