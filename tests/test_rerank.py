"""Re-ranked search: ITC shortlist → ITM, fused; feature cache; text collections; bad candidates."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import BlipForImageTextRetrieval, BlipProcessor

from blipsearch.errors import InvalidInputError
from indexer.texts import index_texts
from service.engines import open_engine
from service.indexing import index_paths
from tests.helpers import assert_same_ranking, brute_force_scores, make_image, write_images

CAPTIONS = [
    f"a photo of {c} {s}" for c in ("red", "green", "blue", "black") for s in ("square", "circle", "dog", "cat")
]


def _itm_reference(path, image, texts, enc_id):
    model = BlipForImageTextRetrieval.from_pretrained(path).eval()
    processor = BlipProcessor.from_pretrained(path)
    out = []
    for text in texts:
        inputs = processor(images=image, text=text, return_tensors="pt")
        inputs["input_ids"][:, 0] = enc_id
        with torch.no_grad():
            out.append(model(**inputs, use_itm_head=True).itm_score[0].numpy())
    return np.array(out)


@pytest.fixture
def image_collection(settings, blip_embedder, tmp_path):
    paths = write_images(tmp_path / "imgs", 24)
    index_paths(settings, [tmp_path / "imgs"], "imgs", embedder=blip_embedder, progress=False)
    return paths


def test_text_to_image_rerank_matches_itm_and_fuses(settings, blip_embedder, tiny_models, image_collection):
    engine = open_engine(settings, "imgs", embedder=blip_embedder, rerank=True)
    text = "a red square"
    plain = engine.search_text(text, 24)
    result = engine.search_text(text, 5, rerank=True, rerank_k=12)
    assert len(result.hits) == 5 and not result.dropped
    shortlist = {h.id: h.itc_score for h in plain.hits[:12]}
    assert {h.id for h in result.hits} <= set(shortlist)  # re-ranking only reorders the ITC shortlist
    enc_id = blip_embedder.processor.tokenizer.convert_tokens_to_ids("[ENC]")
    from PIL import Image

    for hit in result.hits:
        ref = _itm_reference(tiny_models["blip-itm"], Image.open(hit.uri).convert("RGB"), [text], enc_id)[0]
        prob = np.exp(ref[1]) / np.exp(ref).sum()
        assert hit.itm_score == pytest.approx(prob, abs=1e-4)
        assert hit.itc_score == pytest.approx(shortlist[hit.id], abs=1e-6)
        assert hit.score == pytest.approx(ref[1] + hit.itc_score, abs=1e-4)  # LAVIS: ITM logit + ITC
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    # The top 5 of the fused ranking over the whole shortlist, not just any 5.
    full = engine.search_text(text, 12, rerank=True, rerank_k=12)
    assert [h.id for h in full.hits[:5]] == [h.id for h in result.hits]


def test_fusion_modes(settings, blip_embedder, image_collection):
    engine = open_engine(settings, "imgs", embedder=blip_embedder, rerank=True)
    by_prob = engine.search_text("green circle", 8, rerank=True, rerank_k=8, fusion="itm").hits
    assert [h.score for h in by_prob] == [h.itm_score for h in by_prob]
    assert [h.score for h in by_prob] == sorted((h.score for h in by_prob), reverse=True)
    itc = engine.search_text("green circle", 8, rerank=True, fusion="itc").hits
    assert [h.id for h in itc] == [h.id for h in engine.search_text("green circle", 8).hits]
    with pytest.raises(InvalidInputError):
        engine.search_text("x", 3, rerank=True, fusion="bogus")


def test_unreadable_candidates_are_dropped_with_reason(settings, blip_embedder, image_collection):
    engine = open_engine(settings, "imgs", embedder=blip_embedder, rerank=True)
    top = engine.search_text("blue dog", 6).hits
    from pathlib import Path

    Path(top[0].uri).unlink()  # deleted
    Path(top[1].uri).write_bytes(b"\xff\xd8garbage")  # corrupted
    result = engine.search_text("blue dog", 6, rerank=True, rerank_k=6)
    assert {d["id"] for d in result.dropped} == {top[0].id, top[1].id}
    assert all(d["reason"] for d in result.dropped)
    assert len(result.hits) == 4 and {h.id for h in result.hits} == {h.id for h in top[2:]}


def test_feature_cache_serves_tokens_without_the_files(settings, blip_embedder, tmp_path):
    paths = write_images(tmp_path / "imgs", 12)
    index_paths(
        settings, [tmp_path / "imgs"], "cached", embedder=blip_embedder, progress=False, cache_itm_features=True
    )
    engine = open_engine(settings, "cached", embedder=blip_embedder, rerank=True)
    before = engine.search_text("a black cat", 6, rerank=True, rerank_k=12)
    for p in paths:
        p.unlink()  # recompute would now fail; the cache must serve every candidate
    after = engine.search_text("a black cat", 6, rerank=True, rerank_k=12)
    assert not after.dropped
    assert [h.id for h in after.hits] == [h.id for h in before.hits]
    store = engine.reranker.tokens.features
    assert store.enabled and store.hits >= 12
    # fp16 tokens give the fp32 recompute's scores to fp16 precision.
    settings_nocache = settings.model_copy()
    write_images(tmp_path / "again", 12)
    index_paths(settings_nocache, [tmp_path / "again"], "plain", embedder=blip_embedder, progress=False)
    plain = open_engine(settings, "plain", embedder=blip_embedder, rerank=True)
    ref = {h.id: h.itm_score for h in plain.search_text("a black cat", 12, rerank=True, rerank_k=12).hits}
    got = {h.id: h.itm_score for h in engine.search_text("a black cat", 12, rerank=True, rerank_k=12).hits}
    assert ref.keys() == got.keys()
    assert max(abs(ref[i] - got[i]) for i in ref) < 5e-3
    folder = settings.data_dir / "collections" / "cached"
    files = sorted(p.name for p in folder.iterdir() if p.name.startswith("itmfeat-"))
    assert files and np.load(folder / files[0]).dtype == np.float16


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_text_collection_image_to_text(settings, blip_embedder, tiny_models, tmp_path, fmt):
    rows = [{"id": f"t{i}", "text": t, "lang": "en"} for i, t in enumerate(CAPTIONS)]
    path = tmp_path / f"texts.{fmt}"
    if fmt == "csv":
        path.write_text("id,text,lang\n" + "".join(f"{r['id']},{r['text']},{r['lang']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    report = index_texts(settings.data_dir, path, "caps", blip_embedder, progress=False)
    assert report["added"] == len(CAPTIONS) and report["failed"] == 0
    again = index_texts(settings.data_dir, path, "caps", blip_embedder, progress=False)
    assert again["added"] == 0 and again["skipped_duplicates"] == len(CAPTIONS)

    engine = open_engine(settings, "caps", embedder=blip_embedder, rerank=True)
    image = make_image(5)
    plain = engine.search_image(image, 5)
    text_emb = blip_embedder.embed_texts(CAPTIONS)
    ref_scores = brute_force_scores(blip_embedder.embed_images([image])[0], text_emb)
    assert_same_ranking([h.id for h in plain.hits], np.arange(16), ref_scores, 5)
    assert [h.record["text"] for h in plain.hits] == [CAPTIONS[h.id] for h in plain.hits]
    assert plain.hits[0].to_dict()["metadata"] == {"lang": "en"}

    reranked = engine.search_image(image, 5, rerank=True, rerank_k=16)
    enc_id = blip_embedder.processor.tokenizer.convert_tokens_to_ids("[ENC]")
    ref = _itm_reference(tiny_models["blip-itm"], image, [h.record["text"] for h in reranked.hits], enc_id)
    np.testing.assert_allclose([h.score - h.itc_score for h in reranked.hits], ref[:, 1], atol=1e-4)
    with pytest.raises(InvalidInputError):
        engine.search_text("texts are searched with images", 3)


def test_text_file_errors(settings, blip_embedder, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,body\nx,y\n")
    with pytest.raises(InvalidInputError, match="missing column"):
        index_texts(settings.data_dir, bad, "t", blip_embedder, progress=False)
    with pytest.raises(InvalidInputError, match="unsupported"):
        index_texts(settings.data_dir, tmp_path / "x.xml", "t", blip_embedder, progress=False)
    empty = tmp_path / "e.jsonl"
    empty.write_text('{"id": 1, "text": ""}\n{"id": 2, "text": "a dog"}\n')
    report = index_texts(settings.data_dir, empty, "t", blip_embedder, progress=False)
    assert report["added"] == 1 and report["failed"] == 1
