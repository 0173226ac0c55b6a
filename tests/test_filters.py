"""Filters inside the FAISS search (ID selector), relevance cut-off and sort."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from blipsearch.errors import InvalidInputError
from indexer.texts import index_texts
from search.engine import QueryOptions
from search.filters import Filters
from service.engines import open_engine
from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import assert_same_ranking, brute_force_scores, write_images


@pytest.fixture
def two_folders(settings, blip_embedder, tmp_path):
    write_images(tmp_path / "a", 30)
    write_images(tmp_path / "b", 6, start=500, fmt="PNG")
    index_paths(settings, [tmp_path / "a", tmp_path / "b"], "c", embedder=blip_embedder, progress=False)
    return tmp_path


@pytest.mark.parametrize("fixture", ["blip_embedder", "blip2_embedder"])
def test_selective_filter_still_returns_k_exact(request, fixture, settings, tmp_path):
    embedder = request.getfixturevalue(fixture)
    write_images(tmp_path / "a", 30)
    write_images(tmp_path / "b", 6, start=500, fmt="PNG")
    index_paths(settings, [tmp_path / "a", tmp_path / "b"], "c", embedder=embedder, progress=False)
    engine = open_engine(settings, "c", embedder=embedder)
    opts = QueryOptions(filters=Filters(uri_prefix=str((tmp_path / "b").resolve())))
    hits = engine.search_text("a red square", 5, options=opts).hits
    assert len(hits) == 5 and all("/b/" in h.uri for h in hits)
    # Exactly the brute-force top 5 among the filtered records.
    coll = Collection.open(settings.data_dir, "c")
    ids, emb = coll.all_embeddings()
    recs = coll.get_records(ids.tolist())
    keep = np.array([recs[int(i)]["uri"].startswith(str((tmp_path / "b").resolve())) for i in ids])
    q = embedder.embed_texts(["a red square"])[0]
    assert_same_ranking([h.id for h in hits], ids[keep], brute_force_scores(q, emb[keep]), 5)


def test_field_size_and_date_filters(settings, blip_embedder, two_folders):
    engine = open_engine(settings, "c", embedder=blip_embedder)

    def ids(**kw):
        return {h.id for h in engine.search_text("x", 100, options=QueryOptions(filters=Filters(**kw))).hits}

    assert len(ids(fields={"format": "PNG"})) == 6
    assert len(ids(fields={"format": ["PNG", "JPEG"]})) == 36
    coll = Collection.open(settings.data_dir, "c")
    t = coll.read_table(["id", "width", "height"]).to_pylist()
    assert ids(min_width=100) == {r["id"] for r in t if r["width"] >= 100}
    assert ids(max_height=80, min_width=60) == {r["id"] for r in t if r["height"] <= 80 and r["width"] >= 60}
    now = datetime.now(timezone.utc)
    assert len(ids(added_after=now - timedelta(hours=1))) == 36 and ids(added_after=now + timedelta(hours=1)) == set()
    assert ids(fields={"format": "GIF"}) == set()
    assert ids(fields={"nonexistent": 1}) == set()  # a metadata key no record has matches nothing
    with pytest.raises(InvalidInputError):
        ids(fields={"embedding": 1})


def test_min_score_and_sort(settings, blip_embedder, two_folders):
    engine = open_engine(settings, "c", embedder=blip_embedder, rerank=True)
    base = engine.search_text("a red square", 10).hits
    cut = base[4].itc_score
    kept = engine.search_text("a red square", 10, options=QueryOptions(min_score=cut)).hits
    assert [h.id for h in kept] == [h.id for h in base[:5]]
    rr = engine.search_text("a red square", 10, rerank=True, rerank_k=10, options=QueryOptions(min_score=0.5)).hits
    assert all(h.itm_score >= 0.5 for h in rr)
    newest = engine.search_text("a red square", 10, options=QueryOptions(sort="added_at")).hits
    stamps = [h.record["added_at"] for h in newest]
    assert stamps == sorted(stamps, reverse=True)


def test_metadata_filter_on_text_collection(settings, blip_embedder, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": i, "text": f"caption {i}", "lang": "en" if i % 2 else "de"}) + "\n" for i in range(10)
        )
    )
    index_texts(settings.data_dir, path, "t", blip_embedder, progress=False)
    engine = open_engine(settings, "t", embedder=blip_embedder)
    from tests.helpers import make_image

    hits = engine.search_image(make_image(1), 10, options=QueryOptions(filters=Filters(fields={"lang": "de"}))).hits
    assert len(hits) == 5 and all(h.to_dict()["metadata"]["lang"] == "de" for h in hits)
