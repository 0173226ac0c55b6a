"""End to end: index images, then every search equals brute force over the stored embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from search.engine import SearchEngine
from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import assert_same_ranking, brute_force_scores, brute_force_topk, make_image, write_images

QUERIES = ["a red square", "green circle on black", "two yellow stripes", "sky"]


@pytest.mark.parametrize("fixture", ["blip_embedder", "blip2_embedder"])
def test_text_and_image_search_equal_brute_force(request, fixture, settings, tmp_path):
    embedder = request.getfixturevalue(fixture)
    write_images(tmp_path / "imgs", 60)
    report = index_paths(settings, [tmp_path / "imgs"], "c", embedder=embedder, progress=False)
    assert report.added == 60 and report.failed == 0

    coll = Collection.open(settings.data_dir, "c")
    ids, emb = coll.all_embeddings()
    assert len(ids) == 60 and len(set(ids.tolist())) == 60
    # Stored embeddings are the embedder's own output for the same images.
    uris = coll.get_records(ids[:3].tolist())
    from PIL import Image

    fresh = embedder.embed_images([Image.open(uris[int(i)]["uri"]).convert("RGB") for i in ids[:3]])
    np.testing.assert_allclose(emb[:3], fresh, atol=1e-5)

    engine = SearchEngine.open(coll, embedder)
    # Id-for-id the brute-force ranking, except that candidates whose scores are float ties
    # (within FLOAT_TIE) may come in either order: FAISS and numpy round differently per CPU.
    for text in QUERIES:
        q = embedder.embed_texts([text])[0]
        for k in (1, 10, 60):
            hits = engine.search_text(text, k).hits
            assert_same_ranking([h.id for h in hits], ids, brute_force_scores(q, emb), k)
            _, ref_scores = brute_force_topk(q, emb, ids, k)
            np.testing.assert_allclose([h.score for h in hits], ref_scores, atol=1e-5)
    query_img = make_image(7)
    hits = engine.search_image(query_img, 10).hits
    assert_same_ranking([h.id for h in hits], ids, brute_force_scores(embedder.embed_images([query_img])[0], emb), 10)
    assert hits[0].uri.endswith("img_00007.jpg")  # the same image is its own best match


def test_empty_collection_search_returns_no_results(settings, blip_embedder, tmp_path):
    (tmp_path / "none").mkdir()
    index_paths(settings, [tmp_path / "none"], "empty", embedder=blip_embedder, progress=False)
    engine = SearchEngine.open(Collection.open(settings.data_dir, "empty"), blip_embedder)
    assert engine.search_text("anything", 5).hits == []


def test_bad_k_and_empty_query_are_refused(settings, blip_embedder, tmp_path):
    from blipsearch.errors import InvalidInputError

    write_images(tmp_path / "i", 3)
    index_paths(settings, [tmp_path / "i"], "k", embedder=blip_embedder, progress=False)
    engine = SearchEngine.open(Collection.open(settings.data_dir, "k"), blip_embedder)
    for bad_k in (0, -1, 10**6):
        with pytest.raises(InvalidInputError):
            engine.search_text("x", bad_k)
    with pytest.raises(InvalidInputError):
        engine.search_text("   ", 3)
