"""ITM logits against the transformers models' own ITM forward passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Blip2ForImageTextRetrieval, Blip2Processor, BlipForImageTextRetrieval, BlipProcessor

from models import load_itm
from tests.helpers import make_image

TEXTS = ["a red square", "two dogs running on the beach at sunset", "cat", "a photo of a small blue circle on grass"]


@pytest.fixture(scope="module")
def images():
    return [make_image(i) for i in range(4)]


def _blip_reference(path, images, texts, first_token_id=None):
    model = BlipForImageTextRetrieval.from_pretrained(path).eval()
    processor = BlipProcessor.from_pretrained(path)
    ref = np.zeros((len(images), len(texts), 2), np.float32)
    for i, img in enumerate(images):
        for j, text in enumerate(texts):
            inputs = processor(images=img, text=text, return_tensors="pt")
            if first_token_id is not None:
                inputs["input_ids"][:, 0] = first_token_id
            with torch.no_grad():
                ref[i, j] = model(**inputs, use_itm_head=True).itm_score[0].numpy()
    return ref


@pytest.mark.parametrize("first_token", ["cls", "enc"])
def test_blip_itm_equals_transformers(tiny_models, blip_embedder, images, first_token):
    scorer = load_itm(blip_embedder, first_token=first_token, batch_size=3)
    assert scorer.first_token == first_token
    ref = _blip_reference(tiny_models["blip-itm"], images, TEXTS, scorer.first_token_id)
    tokens = scorer.vision_tokens(blip_embedder.preprocess(images))
    for j, text in enumerate(TEXTS):  # one text, k images
        np.testing.assert_allclose(scorer.score_text_vs_images(text, tokens), ref[:, j], atol=1e-4)
    for i in range(len(images)):  # one image, many texts (shared K/V)
        np.testing.assert_allclose(scorer.score_image_vs_texts(tokens[i : i + 1], TEXTS), ref[i], atol=1e-4)
    assert np.ptp(ref[:, :, 1]) > 1e-4  # the head distinguishes pairs


def test_enc_token_changes_the_itm_input(tiny_models, blip_embedder, images):
    enc = load_itm(blip_embedder, first_token="enc")
    cls = load_itm(blip_embedder, first_token="cls")
    ids_enc, _ = enc.tokenize(["a cat"])
    ids_cls, _ = cls.tokenize(["a cat"])
    tok = blip_embedder.processor.tokenizer
    assert ids_enc[0, 0] == tok.convert_tokens_to_ids("[ENC]") and ids_cls[0, 0] == tok.cls_token_id
    assert (ids_enc[0, 1:] == ids_cls[0, 1:]).all()


def test_blip2_itm_equals_transformers(tiny_models, blip2_embedder, images):
    path = tiny_models["blip2-itm"]
    model = Blip2ForImageTextRetrieval.from_pretrained(path).eval()
    processor = Blip2Processor.from_pretrained(path)
    scorer = load_itm(blip2_embedder, batch_size=3)
    tokens = scorer.vision_tokens(blip2_embedder.preprocess(images))
    ref = np.zeros((len(images), len(TEXTS), 2), np.float32)
    for i, img in enumerate(images):
        for j, text in enumerate(TEXTS):
            inputs = processor(images=img, text=text, return_tensors="pt")
            with torch.no_grad():
                ref[i, j] = model(**inputs, use_image_text_matching_head=True).logits_per_image[0].numpy()
    for j, text in enumerate(TEXTS):
        np.testing.assert_allclose(scorer.score_text_vs_images(text, tokens), ref[:, j], atol=1e-4)
    for i in range(len(images)):
        np.testing.assert_allclose(scorer.score_image_vs_texts(tokens[i], TEXTS), ref[i], atol=1e-4)


@pytest.mark.gpu
def test_itm_on_cuda_matches_cpu(tiny_models, blip_embedder, images):
    from models import load_embedder

    gpu = load_embedder(str(tiny_models["blip-itm"]), device="cuda", dtype="fp32")
    g, c = load_itm(gpu), load_itm(blip_embedder)
    tg = g.vision_tokens(gpu.preprocess(images))
    tc = c.vision_tokens(blip_embedder.preprocess(images))
    np.testing.assert_allclose(g.score_image_vs_texts(tg[:1], TEXTS), c.score_image_vs_texts(tc[:1], TEXTS), atol=1e-4)
    np.testing.assert_allclose(g.score_text_vs_images(TEXTS[0], tg), c.score_text_vs_images(TEXTS[0], tc), atol=1e-4)
