"""Captioners on the ``fast`` runtime: the vision encoder on OpenVINO bf16, the decoder under bf16
autocast (on a CPU with native bf16), within the generation bound of evaluation/fidelity.py;
``exact`` the transformers forward. Under the AVX2 cap (scripts/test.sh) ``fast`` equals ``exact``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from blipsearch.config import Settings
from evaluation.fidelity import generation_fidelity
from models.captioners import Decoding
from models.fast_runtime import openvino_available
from models.precision import has_native_bf16
from service.models import load_captioner
from tests.helpers import make_image

NATIVE = has_native_bf16()
OPENVINO = NATIVE and openvino_available()
FAST_VISION = "openvino bf16" if OPENVINO else ("torch bf16" if NATIVE else "torch fp32")
FAST_DECODER = "torch bf16" if NATIVE else "torch fp32"


def _load(path: Path, tmp_path: Path, precision: str):  # type: ignore[no-untyped-def]
    """Through the product's path: Settings -> service.models.load_captioner."""
    settings = Settings(data_dir=tmp_path / "data", precision=precision, caption_model=str(path), device="cpu")
    return load_captioner(settings)


def _pixels(captioner, n: int = 6):  # type: ignore[no-untyped-def]
    return captioner.preprocess([make_image(i, (64, 48)) for i in range(n)])


def test_exact_captioner_is_the_transformers_forward(tiny_models, tmp_path):
    from transformers import BlipForConditionalGeneration, BlipProcessor

    path = tiny_models["blip-caption"]
    exact = _load(path, tmp_path, "exact")
    assert type(exact.model.vision_model).__module__.startswith("transformers.")  # nothing swapped in
    model = BlipForConditionalGeneration.from_pretrained(path).eval()
    processor = BlipProcessor.from_pretrained(path)
    images = [make_image(i, (64, 48)) for i in range(3)]
    dec = Decoding(max_new_tokens=8)
    with torch.no_grad():
        ref = model.generate(**processor(images=images, return_tensors="pt"), **dec.generate_kwargs())
    want = [t.strip() for t in processor.batch_decode(ref, skip_special_tokens=True)]
    assert exact.caption(images, dec) == want


@pytest.mark.skipif(not OPENVINO, reason="the OpenVINO vision encoder runs only with native bf16 and openvino")
def test_the_converted_vision_encoder_is_cached_and_close_to_torch(tiny_models, tmp_path):
    from models.openvino_caption import TOWER
    from models.openvino_runtime import CONVERSIONS

    fast = _load(tiny_models["blip-caption"], tmp_path, "fast")
    cache = Path(tmp_path / "data" / "cache" / "openvino")
    assert any(p.name.startswith(f"blip-{TOWER}-") for p in cache.iterdir())
    before = CONVERSIONS[TOWER]
    again = _load(tiny_models["blip-caption"], tmp_path, "fast")  # a second load reads the IR
    assert CONVERSIONS[TOWER] == before
    pixels = torch.as_tensor(_pixels(fast, 3))
    tower = again.model.vision_model.tower
    with torch.no_grad():
        want = tower.vision(pixel_values=pixels).last_hidden_state
    got = again.model.vision_model(pixel_values=pixels).last_hidden_state
    cos = torch.nn.functional.cosine_similarity(got.flatten(1), want.flatten(1))
    assert got.shape == want.shape and float(cos.min()) > 0.999


@pytest.mark.slow
def test_llava_and_instructblip_fast_paths(tiny_generators, tmp_path):
    llava = _load(tiny_generators["llava"], tmp_path, "fast")
    assert llava.stage_runtimes() == {"vision": FAST_VISION, "decoder": FAST_DECODER}
    exact = _load(tiny_generators["llava"], tmp_path, "exact")
    pixels = _pixels(exact, 4)
    tokens, logits = exact.greedy_logits(pixels, Decoding(max_new_tokens=8))
    forced = llava.forced_logits(pixels, tokens)
    f = generation_fidelity(tokens.numpy(), logits.numpy(), forced.numpy(), exact.eos_token_ids)
    assert f.holds(), f.as_dict()
    # VQA scores (first-token logits) stay the fp32 forward in both modes: the vision swap steps aside
    q = "is there a dog?"
    torch.testing.assert_close(llava.first_token_logits(pixels, q), exact.first_token_logits(pixels, q))
    # InstructBLIP (Flan-T5) missed the bound with any part in bf16: its fast path is the fp32 forward
    ib = _load(tiny_generators["instructblip"], tmp_path, "fast")
    assert ib.stage_runtimes() == {"vision": "torch fp32", "decoder": "torch fp32"}
    ib_exact = _load(tiny_generators["instructblip"], tmp_path, "exact")
    px = _pixels(ib_exact, 3)
    dec = Decoding(max_new_tokens=6)
    assert ib.caption_pixels(px, dec) == ib_exact.caption_pixels(px, dec)
