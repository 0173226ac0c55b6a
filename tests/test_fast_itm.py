"""The ``fast`` ITM path: factored cross-attention (models/fast_itm.py) under the fast plan.

Through the real loading path on the tiny BLIP / BLIP-2: patched modules equal unpatched ones,
fast ITM scores stay within the ITM bound (|ΔP| ≤ 0.01) of ``exact``, ``exact`` is untouched.
On a CPU without native bf16 (or under scripts/test.sh's AVX2 cap) the fast plan is fp32 and
the factored form must match exact to float rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import load_embedder, load_itm
from models.fast_itm import (
    cost_factored,
    cost_standard,
    cross_attention_modules,
    factor_cross_attention,
    factored_attention,
    is_factored,
)
from models.itm import softmax_match
from models.precision import has_native_bf16
from tests.helpers import make_image

NATIVE = has_native_bf16()
TEXTS = ["a red square", "two dogs running on the beach at sunset", "cat", "a photo of a small blue circle on grass"]


@pytest.fixture(scope="module")
def fast_blip(tiny_models):
    emb = load_embedder(str(tiny_models["blip-itm"]), device="cpu", batch_size=8, precision="fast")
    scorer = load_itm(emb, batch_size=3)
    factor_cross_attention(scorer.model.text_encoder, policy="always")  # tiny shapes: force the factored form
    return scorer


@pytest.fixture(scope="module")
def images():
    return [make_image(i) for i in range(5)]


def _unpatched(module, hidden, enc, mask=None):
    return module._unfactored_forward(hidden, encoder_hidden_states=enc, encoder_attention_mask=mask)[0]


@pytest.mark.parametrize("family", ["blip-itm", "blip2-itm"])
def test_factored_module_equals_unpatched(tiny_models, family):
    emb = load_embedder(str(tiny_models[family]), device="cpu", batch_size=8, precision="exact")
    model = emb.model.text_encoder if family == "blip-itm" else emb.model.qformer
    mods = cross_attention_modules(model)
    assert mods and factor_cross_attention(model) == len(mods) and is_factored(model)
    g = torch.Generator().manual_seed(0)
    for m in mods:
        d, e = m.query.in_features, m.key.in_features
        hidden = torch.randn(3, 7, d, generator=g)
        enc = torch.randn(3, 11, e, generator=g) * 2
        with torch.inference_mode():
            want = _unpatched(m, hidden, enc)
            assert want.abs().max() > 1e-3
            got, probs = factored_attention(m, hidden, enc)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
            # one image broadcast against three texts (image→text)
            torch.testing.assert_close(factored_attention(m, hidden, enc[:1])[0], _unpatched(m, hidden, enc[:1]))
            # an additive key mask: the key bias still cancels (per-query constant)
            mask = torch.zeros(3, 1, 1, 11)
            mask[:, :, :, 4:7] = torch.finfo(torch.float32).min
            got_m = factored_attention(m, hidden, enc, mask)[0]
            ref_m = factored_attention(m, hidden, enc[:, [0, 1, 2, 3, 7, 8, 9, 10]])[0]
            torch.testing.assert_close(got_m, ref_m, atol=1e-5, rtol=1e-4)
            assert not torch.allclose(got_m, want, atol=1e-3)  # the mask really changed the output
            # the patched forward itself (policy always) returns the factored result
            factor_cross_attention(model, policy="always")
            torch.testing.assert_close(m(hidden, encoder_hidden_states=enc)[0], got)
            # a call without image tokens falls back to transformers' forward
            if m.key.in_features == m.query.in_features:
                torch.testing.assert_close(m(hidden)[0], m._unfactored_forward(hidden)[0], atol=0, rtol=0)
    with pytest.raises(ValueError):
        factor_cross_attention(model, policy="never")


def test_cost_model_picks_factored_for_text_to_image_only():
    # base-size BLIP: D = E = 768, 12 heads, 577 image tokens, a 15-token query, k = 16
    assert cost_factored(16, 15, 12, 577, 768, 768) * 3 < cost_standard(16, 16, 15, 577, 768, 768)
    # one image shared by 16 texts: projecting K/V once is cheaper, so the standard form is kept
    assert cost_factored(16, 15, 12, 577, 768, 768) > cost_standard(16, 1, 15, 577, 768, 768)


def test_exact_scorer_is_not_patched(blip_embedder, blip2_embedder):
    assert not is_factored(load_itm(blip_embedder).model.text_encoder)
    assert not is_factored(load_itm(blip2_embedder).model.qformer)


def _bound(exact_logits, fast_logits):
    dp = np.abs(softmax_match(exact_logits) - softmax_match(fast_logits)).max()
    assert dp <= 0.01, dp
    # logits: bf16 on the tiny (width 32) model is the worst case; fp32 must agree to rounding
    np.testing.assert_allclose(fast_logits, exact_logits, atol=0.05 if NATIVE else 1e-4)
    if not NATIVE:
        assert dp < 1e-5


def test_fast_blip_itm_within_bound_both_directions(blip_embedder, fast_blip, images):
    exact = load_itm(blip_embedder, batch_size=3)
    assert is_factored(fast_blip.model.text_encoder)
    assert fast_blip.embedder.stage_dtypes()["itm"] == ("bf16" if NATIVE else "fp32")
    tokens = exact.vision_tokens(blip_embedder.preprocess(images))
    cached = tokens.to(torch.float16)  # the feature cache's dtype
    for text in TEXTS:  # one text, k images (batches of 3: 3 + 2)
        want = exact.score_text_vs_images(text, cached)
        _bound(want, fast_blip.score_text_vs_images(text, cached))
    for i in range(len(images)):  # one image, many texts
        want = exact.score_image_vs_texts(cached[i], TEXTS)
        _bound(want, fast_blip.score_image_vs_texts(cached[i], TEXTS))
    pairs = exact.score_pairs(cached[:4], TEXTS)
    _bound(pairs, fast_blip.score_pairs(cached[:4], TEXTS))
    assert np.ptp(pairs[:, 1]) > 1e-4  # the head tells pairs apart


def test_fast_blip2_itm_within_bound(tiny_models, blip2_embedder, images):
    fast_emb = load_embedder(str(tiny_models["blip2-itm"]), device="cpu", batch_size=8, precision="fast")
    fast, exact = load_itm(fast_emb, batch_size=3), load_itm(blip2_embedder, batch_size=3)
    assert is_factored(fast.model.qformer)
    factor_cross_attention(fast.model.qformer, policy="always")
    tokens = exact.vision_tokens(blip2_embedder.preprocess(images))
    for text in TEXTS[:2]:
        want, got = exact.score_text_vs_images(text, tokens), fast.score_text_vs_images(text, tokens)
        # BLIP-2's itm stage stays fp32 in fast (models/precision.py): only rounding differs
        np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(
        fast.score_image_vs_texts(tokens[0], TEXTS), exact.score_image_vs_texts(tokens[0], TEXTS), atol=1e-4
    )
