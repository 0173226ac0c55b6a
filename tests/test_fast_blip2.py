"""BLIP-2's image stage (ViT + Q-Former + projection) in ``fast`` mode, on the tiny BLIP-2
loaded through ``models.load_embedder``: bf16 on a CPU with native bf16 within the cosine bound
of ``exact``, ``exact`` equal to the transformers fp32 forward, and fp32 (equal to ``exact``)
where the kernels are capped below AVX-512."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.precision import BLIP2_FAST_STAGES, has_native_bf16
from tests.helpers import make_image

NATIVE = has_native_bf16()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def blip2_dir(tiny_models, tmp_path_factory) -> Path:
    """The tiny BLIP-2 with its query tokens drawn at random: transformers initialises them to
    zeros, which makes all 32 query outputs equal (trained ones differ)."""
    from transformers import Blip2ForImageTextRetrieval

    out = tmp_path_factory.mktemp("blip2-queries") / "blip2-itm"
    shutil.copytree(tiny_models["blip2-itm"], out)
    model = Blip2ForImageTextRetrieval.from_pretrained(out).eval()
    torch.manual_seed(7)
    with torch.no_grad():
        model.query_tokens.normal_(0.0, 1.0)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pair(blip2_dir):
    from models import load_embedder

    path = str(blip2_dir)
    exact = load_embedder(path, device="cpu", batch_size=8, precision="exact")
    fast = load_embedder(path, device="cpu", batch_size=8, precision="fast")
    pixels = exact.preprocess([make_image(i, (96, 72)) for i in range(8)])
    return exact, fast, pixels


def _transformers_image_features(path: Path, pixels: np.ndarray) -> np.ndarray:
    """The plain transformers fp32 forward: vision model, Q-Former over the 32 queries,
    ``vision_projection``, L2-normalised (``Blip2ForImageTextRetrieval``'s ITC image side)."""
    from transformers import Blip2ForImageTextRetrieval

    model = Blip2ForImageTextRetrieval.from_pretrained(path).eval()
    with torch.no_grad():
        px = torch.from_numpy(pixels)
        tokens = model.vision_model(pixel_values=px).last_hidden_state
        queries = model.query_tokens.expand(len(px), -1, -1)
        out = model.qformer(query_embeds=queries, encoder_hidden_states=tokens).last_hidden_state
        return F.normalize(model.vision_projection(out), dim=-1).numpy()


def test_image_is_a_fast_stage_of_blip2():
    assert BLIP2_FAST_STAGES >= {"image", "text"}


def test_exact_equals_transformers_fp32(blip2_dir, pair):
    exact, _, pixels = pair
    ref = _transformers_image_features(blip2_dir, pixels)
    ours = exact.embed_pixels(pixels)
    assert ours.shape == (8, 32, 256) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    assert exact.stage_dtypes()["image"] == "fp32"
    # the 32 query vectors differ from each other (or "max over queries" would be vacuous)
    assert np.ptp(ours[0] @ ours[0, 0]) > 1e-3


def test_fast_image_vectors_within_cosine_bound(pair):
    exact, fast, pixels = pair
    ref, got = exact.embed_pixels(pixels), fast.embed_pixels(pixels)
    cos = (ref * got).sum(-1)  # both L2-normalised: one cosine per query vector
    assert cos.shape == (8, 32)
    assert cos.min() >= 0.999  # the embedding bound, every one of the 32 vectors per image
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-3)
    assert fast.stage_runtimes()["image"] == "torch"
    if NATIVE:
        assert fast.stage_dtypes()["image"] == "bf16"
        assert not np.allclose(ref, got, atol=1e-6)  # the bf16 path really ran
    else:
        assert fast.stage_dtypes()["image"] == "fp32"
        np.testing.assert_array_equal(ref, got)


def test_fast_vectors_and_tokens_come_from_one_forward(pair):
    """What indexing stores (ITC vectors + the fp16 vision tokens ITM reads) is the fast image
    stage's output: the vectors equal ``embed_pixels``, the tokens the vision model's output."""
    _, fast, pixels = pair
    vecs, tokens = fast.embed_pixels_with_tokens(pixels[:4])
    np.testing.assert_allclose(vecs, fast.embed_pixels(pixels[:4]), atol=1e-6, rtol=0)
    assert tokens.dtype == np.float16 and tokens.shape[0] == 4
    again = fast.vision_tokens(pixels[:4]).float().numpy()
    np.testing.assert_allclose(tokens.astype(np.float32), again, atol=2e-3 * np.abs(again).max(), rtol=0)


_AVX2_SCRIPT = """
import json, sys
import numpy as np
from models import load_embedder
from tests.helpers import make_image
path = sys.argv[1]
exact = load_embedder(path, device="cpu", batch_size=8, precision="exact")
fast = load_embedder(path, device="cpu", batch_size=8, precision="fast")
px = exact.preprocess([make_image(i, (96, 72)) for i in range(4)])
a, b = exact.embed_pixels(px), fast.embed_pixels(px)
print(json.dumps({"dtypes": fast.stage_dtypes(), "max_diff": float(np.abs(a - b).max())}))
"""


@pytest.mark.slow
def test_avx2_capped_fast_is_exact_fp32(blip2_dir):
    """With the kernel libraries capped at AVX2 (as scripts/test.sh's AVX2 pass runs), ``fast``
    plans fp32 for BLIP-2's image stage and computes exactly what ``exact`` does."""
    env = dict(
        os.environ,
        ATEN_CPU_CAPABILITY="avx2",
        ONEDNN_MAX_CPU_ISA="AVX2",
        MKL_ENABLE_INSTRUCTIONS="AVX2",
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
    )
    out = subprocess.run(
        [sys.executable, "-c", _AVX2_SCRIPT, str(blip2_dir)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["dtypes"] == {"image": "fp32", "text": "fp32", "itm": "fp32"}
    assert res["max_diff"] == 0.0
