"""The generation fidelity bound (evaluation/fidelity.py) and teacher forcing through generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.fidelity import generation_fidelity, greedy_agreement, valid_positions


def _logits(seed: int, n: int = 3, t: int = 6, v: int = 50) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3, (n, t, v)).astype(np.float32)


def test_identical_models_hold_the_bound_exactly():
    e = _logits(0)
    tokens = e.argmax(axis=2)
    f = generation_fidelity(tokens, e, e.copy())
    assert f.positions == 18 and f.mean_abs_dlogp == 0.0 and f.error == 0.0
    assert f.decisive_agreement == 1.0 and f.holds()


def test_a_flip_at_a_decisive_position_breaks_the_bound():
    e = _logits(1)
    tokens = e.argmax(axis=2)
    fast = e.copy()
    top = tokens[0, 2]
    fast[0, 2, top] -= 40.0  # a large change: the reference's clear winner loses
    f = generation_fidelity(tokens, e, fast)
    assert f.decisive_agreement < 1.0 and not f.holds()
    assert f.max_abs_dlogp > 1.0


def test_small_noise_only_flips_ties_which_are_not_judged():
    e = _logits(2, n=8, t=10, v=200)
    e[:, :, 7] = e.max(axis=2) + 20.0  # every position has a wide-margin winner...
    e[0, 0, 9] = e[0, 0, 7] - 1e-4  # ...but one is a near tie
    tokens = e.argmax(axis=2)
    fast = e + np.random.default_rng(3).normal(0, 1e-3, e.shape).astype(np.float32)
    fast[0, 0, 9] = fast[0, 0, 7] + 1e-3  # the tie flips
    f = generation_fidelity(tokens, e, fast)
    assert f.decisive_agreement == 1.0 and f.decisive_share < 1.0 and f.holds()


def test_positions_after_the_end_token_are_not_compared():
    tokens = np.array([[5, 2, 0, 0], [5, 6, 7, 2]])
    assert valid_positions(tokens, [2]).tolist() == [[True, True, False, False], [True, True, True, True]]
    e = _logits(4, n=2, t=4, v=10)
    fast = e.copy()
    fast[0, 3] += np.arange(10)  # garbage after row 0 ended: ignored
    assert generation_fidelity(tokens, e, fast, [2]).mean_abs_dlogp == 0.0
    assert greedy_agreement(tokens, np.array([[5, 2, 9, 9], [5, 6, 1, 2]]), [2]) == pytest.approx(5 / 6)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        generation_fidelity(np.zeros((1, 2), dtype=int), _logits(0, 1, 2), _logits(0, 1, 3))


@pytest.mark.parametrize("name", ["blip-caption", "blip2-caption"])
def test_teacher_forcing_reproduces_greedy_logits_and_measures_bf16(tiny_models, name):
    from PIL import Image

    from models.captioners import Decoding, load_captioner
    from models.precision import STAGES, plan_precision

    exact = load_captioner(str(tiny_models[name]), device="cpu", precision="exact")
    images = [Image.new("RGB", (40, 30), c) for c in ("red", "navy", "olive")]
    pixels = exact.preprocess(images)
    tokens, logits = exact.greedy_logits(pixels, Decoding(max_new_tokens=8))
    # Fed its own greedy tokens, the same model gives the same logits: teacher forcing is exact.
    forced = exact.forced_logits(pixels, tokens)
    assert forced.shape == logits.shape
    torch.testing.assert_close(forced, logits, rtol=1e-4, atol=1e-4)
    same = generation_fidelity(tokens.numpy(), logits.numpy(), forced.numpy(), exact.eos_token_ids)
    assert same.mean_abs_dlogp < 1e-4 and same.decisive_agreement == 1.0

    # bf16 autocast (emulated where the CPU has no bf16 units: the rounding is the same).
    fast = load_captioner(str(tiny_models[name]), device="cpu", precision="exact")
    fast.plan = plan_precision("fast", torch.device("cpu"), flags={"avx512_bf16"}, fast_stages=STAGES)
    fast_logits = fast.forced_logits(pixels, tokens)
    f = generation_fidelity(tokens.numpy(), logits.numpy(), fast_logits.numpy(), exact.eos_token_ids)
    assert f.positions > 0 and np.isfinite(f.mean_abs_dlogp)
    assert f.mean_abs_dlogp > 0.0  # bf16 did change something: the comparison is not vacuous
