"""The project's ITC embeddings against the transformers models' own forward passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Blip2ForImageTextRetrieval, Blip2Processor, BlipForImageTextRetrieval, BlipProcessor

from tests.helpers import make_image

TEXTS = [
    "a red square on a white background",
    "two dogs running on the beach at sunset",
    "cat",
    "a photo of a blue circle",
]


@pytest.fixture(scope="module")
def images():
    return [make_image(i) for i in range(5)]


def test_blip_itc_equals_transformers_itm_score(tiny_models, blip_embedder, images):
    path = tiny_models["blip-itm"]
    model = BlipForImageTextRetrieval.from_pretrained(path).eval()
    processor = BlipProcessor.from_pretrained(path)
    img_emb = blip_embedder.embed_images(images)
    txt_emb = blip_embedder.embed_texts(TEXTS)
    assert img_emb.shape == (5, 256) and txt_emb.shape == (4, 256)
    assert img_emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img_emb, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt_emb, axis=1), 1, atol=1e-5)
    ours = img_emb @ txt_emb.T
    ref = np.zeros_like(ours)
    for i, img in enumerate(images):
        for j, text in enumerate(TEXTS):
            inputs = processor(images=img, text=text, return_tensors="pt")
            with torch.no_grad():
                ref[i, j] = model(**inputs, use_itm_head=False).itm_score.item()
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    # The model must tell images apart, or "exact search" would be vacuous.
    assert np.ptp(ours[:, 0]) > 1e-3


def test_blip2_itc_equals_transformers_logits(tiny_models, blip2_embedder, images):
    path = tiny_models["blip2-itm"]
    model = Blip2ForImageTextRetrieval.from_pretrained(path).eval()
    processor = Blip2Processor.from_pretrained(path)
    img_emb = blip2_embedder.embed_images(images)
    txt_emb = blip2_embedder.embed_texts(TEXTS)
    assert img_emb.shape == (5, 32, 256) and txt_emb.shape == (4, 256)
    np.testing.assert_allclose(np.linalg.norm(img_emb, axis=-1), 1, atol=1e-5)
    ours = (img_emb @ txt_emb.T).max(axis=1)  # max over the 32 query vectors
    ref = np.zeros_like(ours)
    for i, img in enumerate(images):
        for j, text in enumerate(TEXTS):
            inputs = processor(images=img, text=text, return_tensors="pt")
            with torch.no_grad():
                out = model(**inputs, use_image_text_matching_head=False)
            ref[i, j] = out.logits_per_image.item()
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert np.ptp(ours[:, 0]) > 1e-4


@pytest.mark.parametrize("fixture", ["blip_embedder", "blip2_embedder"])
def test_tokenizer_and_texts_are_distinct(request, fixture):
    emb = request.getfixturevalue(fixture)
    tok = emb.processor.tokenizer
    ids = tok("a red square on the beach")["input_ids"]
    assert tok.unk_token_id not in ids and len(ids) == 8  # [CLS] 6 words [SEP]
    assert tok.tokenize("zebra") == ["z", "##e", "##b", "##r", "##a"]  # unseen words fall back to pieces
    out = emb.embed_texts(TEXTS)
    assert len(np.unique(out.round(5), axis=0)) == len(TEXTS)


@pytest.mark.parametrize("fixture", ["blip_embedder", "blip2_embedder"])
def test_batching_does_not_change_embeddings(request, fixture, images):
    emb = request.getfixturevalue(fixture)
    all_at_once = emb.embed_images(images)
    one_by_one = np.concatenate([emb.embed_images([im]) for im in images])
    np.testing.assert_allclose(all_at_once, one_by_one, atol=1e-5)
    texts_batched = emb.embed_texts(TEXTS)
    texts_single = np.concatenate([emb.embed_texts([t]) for t in TEXTS])
    np.testing.assert_allclose(texts_batched, texts_single, atol=1e-5)


def test_fingerprint_identifies_weights_not_location(tiny_models, blip_embedder, tmp_path):
    import shutil

    from models import load_embedder

    copy = tmp_path / "copy"
    shutil.copytree(tiny_models["blip-itm"], copy)
    assert load_embedder(str(copy), device="cpu").fingerprint == blip_embedder.fingerprint
    other = load_embedder(str(tiny_models["blip2-itm"]), device="cpu")
    assert other.fingerprint != blip_embedder.fingerprint


@pytest.mark.gpu
def test_cuda_embeddings_match_cpu(tiny_models, blip_embedder, images):
    from models import load_embedder

    gpu = load_embedder(str(tiny_models["blip-itm"]), device="cuda", dtype="fp32")
    np.testing.assert_allclose(gpu.embed_images(images), blip_embedder.embed_images(images), atol=1e-4)
    np.testing.assert_allclose(gpu.embed_texts(TEXTS), blip_embedder.embed_texts(TEXTS), atol=1e-4)
    half = load_embedder(str(tiny_models["blip-itm"]), device="cuda", dtype="auto", precision="fast")
    assert np.abs(half.embed_images(images) - blip_embedder.embed_images(images)).max() < 2e-2
