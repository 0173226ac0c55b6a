"""Precision modes: CPU bf16 detection, the per-stage plan, fast vs exact fidelity on
the tiny models, and each collection's recorded precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blipsearch.errors import ConfigError
from models.precision import STAGES, cpu_flags, has_native_bf16, plan_precision
from tests.helpers import make_image

AVX2_ONLY = {"fpu", "sse4_2", "avx", "avx2", "fma", "f16c"}
AVX512_NO_BF16 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
ZEN4 = AVX512_NO_BF16 | {"avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN4 | {"amx_bf16", "amx_tile", "amx_int8"}
NATIVE = has_native_bf16()
TEXTS = ["a red square", "a photo of a blue circle", "two green stripes on white", "a dog"]


def test_cpu_flags_parses_cpuinfo():
    text = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n\nprocessor\t: 1\n"
    assert cpu_flags(text) == {"fpu", "avx2", "avx512_bf16", "amx_bf16"}
    assert cpu_flags("Features\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}
    assert cpu_flags("nothing here") == frozenset()


@pytest.mark.parametrize(
    ("flags", "native"),
    [(AVX2_ONLY, False), (AVX512_NO_BF16, False), (set(), False), (ZEN4, True), (SAPPHIRE_RAPIDS, True)],
)
def test_native_bf16_detection(flags, native):
    assert has_native_bf16(flags) is native


@pytest.mark.parametrize("flags", [AVX2_ONLY, AVX512_NO_BF16, set()])
def test_fast_never_picks_bf16_without_native_bf16(flags):
    plan = plan_precision("fast", torch.device("cpu"), flags=flags)
    assert plan.autocast == {}
    assert plan.describe() == {"mode": "fast", **dict.fromkeys(STAGES, "fp32")}


def test_fast_on_native_bf16_cpu_and_exact_everywhere():
    fast = plan_precision("fast", torch.device("cpu"), flags=ZEN4)
    assert fast.weights == torch.float32  # weights stay fp32: stages autocast
    assert fast.stage_dtype("image") == fast.stage_dtype("text") == torch.bfloat16
    assert fast.describe()["caption"] == "bf16"  # held the generation bound (BENCHMARKS.md, fast_captions)
    only_image = plan_precision("fast", torch.device("cpu"), flags=SAPPHIRE_RAPIDS, fast_stages=["image"])
    assert only_image.autocast == {"image": torch.bfloat16}
    for flags in (ZEN4, SAPPHIRE_RAPIDS, AVX2_ONLY):
        assert plan_precision("exact", torch.device("cpu"), flags=flags).autocast == {}
    # An explicit dtype wins over the mode; exact on CUDA is fp32.
    assert plan_precision("fast", torch.device("cpu"), torch.float32, flags=AVX2_ONLY).autocast == {}
    assert plan_precision("exact", torch.device("cuda")).weights == torch.float32
    with pytest.raises(ConfigError):
        plan_precision("turbo", torch.device("cpu"))
    with pytest.raises(ConfigError):
        plan_precision("fast", torch.device("cpu"), fast_stages=["vision"])


def test_fast_on_avx2_only_cpu_equals_exact(tiny_models, blip_embedder, monkeypatch):
    """Detection saying "no native bf16" makes fast the exact fp32 path, bit for bit."""
    import models.precision as precision
    from models import load_embedder

    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=None: frozenset(AVX2_ONLY))
    emb = load_embedder(str(tiny_models["blip-itm"]), device="cpu", batch_size=8, precision="fast")
    assert emb.precision == "fast" and emb.stage_dtypes() == {"image": "fp32", "text": "fp32", "itm": "fp32"}
    images = [make_image(i) for i in range(4)]
    np.testing.assert_array_equal(emb.embed_images(images), blip_embedder.embed_images(images))
    np.testing.assert_array_equal(emb.embed_texts(TEXTS), blip_embedder.embed_texts(TEXTS))


@pytest.fixture(scope="module")
def fast_embedder(tiny_models):
    from models import load_embedder

    return load_embedder(str(tiny_models["blip-itm"]), device="cpu", batch_size=8, precision="fast")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("family", ["blip-itm", "blip2-itm"])
def test_fast_within_tolerance_of_exact(tiny_models, family):
    from models import load_embedder

    path = str(tiny_models[family])
    exact = load_embedder(path, device="cpu", batch_size=8, precision="exact")
    fast = load_embedder(path, device="cpu", batch_size=8, precision="fast")
    assert fast.fingerprint == exact.fingerprint  # same model: collections are searchable across modes
    images = [make_image(i) for i in range(8)]
    ie, iff = exact.embed_images(images), fast.embed_images(images)
    te, tf = exact.embed_texts(TEXTS), fast.embed_texts(TEXTS)
    # The tiny models (width 32) are the worst case for bf16's 8-bit mantissa; base-size
    # numbers are in BENCHMARKS.md (scripts/bench/fidelity.py).
    assert _cos(ie, iff).min() > 0.99 and _cos(te, tf).min() > 0.99
    np.testing.assert_allclose(np.linalg.norm(iff, axis=-1), 1.0, atol=1e-3)
    if NATIVE:
        assert not np.allclose(te, tf, atol=1e-6)  # the bf16 text path really ran
    # Both families run their image stage bf16 in fast mode (BENCHMARKS.md, fast_path / fast_blip2).
    if NATIVE:
        assert fast.stage_dtypes()["image"] == "bf16"
        assert not np.allclose(ie, iff, atol=1e-6)  # the bf16 path really ran
    else:
        assert fast.stage_dtypes()["image"] == "fp32"
        np.testing.assert_array_equal(ie, iff)


def test_itm_fast_within_tolerance(blip_embedder, fast_embedder):
    from models import load_itm
    from models.itm import softmax_match

    images = [make_image(i) for i in range(6)]
    probs = []
    for emb in (blip_embedder, fast_embedder):
        scorer = load_itm(emb)
        tokens = scorer.vision_tokens(emb.preprocess(images))
        probs.append(softmax_match(scorer.score_text_vs_images(TEXTS[0], tokens)))
    assert np.abs(probs[0] - probs[1]).max() < 0.02


def test_collection_records_precision_and_searches_across_modes(settings, blip_embedder, fast_embedder, tmp_path):
    from search.engine import SearchEngine
    from service.indexing import index_paths
    from storage.collection import Collection
    from tests.helpers import write_images

    write_images(tmp_path / "a", 6)
    write_images(tmp_path / "b", 4, start=50)
    fast = settings.model_copy(update={"precision": "fast"})
    index_paths(fast, [tmp_path / "a"], "mixed", embedder=fast_embedder, progress=False)
    index_paths(settings, [tmp_path / "a"], "exact-only", embedder=blip_embedder, progress=False)
    m = Collection.open(settings.data_dir, "mixed").manifest
    assert (m.precision, m.embed_dtype) == ("fast", "bf16" if NATIVE else "fp32")
    m2 = Collection.open(settings.data_dir, "exact-only").manifest
    assert (m2.precision, m2.embed_dtype) == ("exact", "fp32")
    # The exact model searches fast-built vectors: same model, scores within tolerance.
    for text in TEXTS:
        got = SearchEngine.open(Collection.open(settings.data_dir, "mixed"), blip_embedder).search_text(text, k=6)
        ref = SearchEngine.open(Collection.open(settings.data_dir, "exact-only"), blip_embedder).search_text(text, k=6)
        a = {h.uri: h.score for h in got.hits}
        b = {h.uri: h.score for h in ref.hits}
        assert a.keys() == b.keys() and len(a) == 6
        assert max(abs(a[u] - b[u]) for u in a) < 0.02
    # An exact writer appending to a fast-built collection makes it "mixed".
    index_paths(settings, [tmp_path / "b"], "mixed", embedder=blip_embedder, progress=False)
    m = Collection.open(settings.data_dir, "mixed").manifest
    assert m.count == 10 and m.precision == "mixed"


def test_cli_precision_flag_and_reports(tmp_path, monkeypatch, tiny_models):
    import json

    from typer.testing import CliRunner

    from cli.main import app
    from tests.helpers import write_images

    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
    monkeypatch.setenv("BLIPSEARCH_PRECISION", "exact")  # restored after the test (the flag sets it)
    write_images(tmp_path / "a", 4)
    write_images(tmp_path / "b", 3, start=20)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> dict:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (result.stdout, result.stderr)
        return json.loads(result.stdout) if "--json" in args else {}

    run("index", str(tmp_path / "a"), "-c", "p", "--precision", "fast", "--json")
    cols = run("collections", "--json")["collections"]
    assert (cols[0]["precision"], cols[0]["embed_dtype"]) == ("fast", "bf16" if NATIVE else "fp32")
    stats = run("index-stats", "-c", "p", "--json")
    assert stats["precision"] == "fast"
    run("--precision", "exact", "index", str(tmp_path / "b"), "-c", "p", "--json")
    assert run("index-stats", "-c", "p", "--json")["precision"] == "mixed"
    run("index", str(tmp_path / "b"), "-c", "q", "--precision", "turbo", "--json", code=2)
    run("--precision", "turbo", "collections", code=2)


def test_kernel_isa_caps_turn_native_bf16_off():
    """Capped kernel libraries (an AVX2 or SSE run of this suite, or a user's choice) never get bf16."""
    from models.precision import isa_capped_below_avx512

    assert isa_capped_below_avx512({"ATEN_CPU_CAPABILITY": "avx2"})
    assert isa_capped_below_avx512({"ATEN_CPU_CAPABILITY": "default"})
    assert isa_capped_below_avx512({"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert isa_capped_below_avx512({"ONEDNN_MAX_CPU_ISA": "SSE41"})
    assert not isa_capped_below_avx512({})
    assert not isa_capped_below_avx512({"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"})
    assert not isa_capped_below_avx512({"ONEDNN_MAX_CPU_ISA": "ALL"})
