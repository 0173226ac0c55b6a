"""The OpenVINO fast runtime: BLIP's image and text towers converted with
``openvino.convert_model``, their fidelity against the exact (fp32 transformers) embeddings, the
on-disk IR cache, and when ``fast`` picks it (models/fast_runtime.py, models/openvino_runtime.py).

The towers run with the bf16 hint on CPUs with native bf16 and f32 elsewhere; the tolerances
hold for both."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

import models.openvino_runtime as ov_runtime
import models.precision as precision
from blipsearch.errors import ConfigError
from models.openvino_runtime import CONVERSIONS
from tests.helpers import assert_same_ranking, make_image

pytest.importorskip("openvino", reason="the [openvino] extra (pip install -e .[openvino]) is not installed")

AVX2_ONLY = {"fpu", "sse4_2", "avx", "avx2", "fma", "f16c"}
ZEN4 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"}
# Short, long and mid-length texts (padding within a batch), and near-duplicates.
TEXTS = [
    "a red square",
    "a photo of a blue circle on a striped background next to a small green triangle in the corner",
    "two green stripes on white",
    "dog",
    "a red square and a blue circle",
    "an image with a gradient from dark to light, and many thin horizontal lines",
]
MIN_COS = 0.999  # the fidelity bound of scripts/bench/fidelity.py, per vector


def _load(path: Path, **kwargs):
    from models import load_embedder

    kwargs.setdefault("precision", "fast")
    return load_embedder(str(path), device="cpu", batch_size=4, **kwargs)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def ov_embedder(tiny_models, tmp_path_factory):
    return _load(
        tiny_models["blip-itm"], fast_runtime="openvino", runtime_cache_dir=str(tmp_path_factory.mktemp("ovcache"))
    )


def test_openvino_embeddings_hold_the_bound(ov_embedder, blip_embedder):
    assert ov_embedder.stage_runtimes() == {"image": "openvino", "text": "openvino", "itm": "torch"}
    images = [make_image(i, (64 + 9 * i, 48 + 5 * i)) for i in range(7)]
    ref_img, ref_txt = blip_embedder.embed_images(images), blip_embedder.embed_texts(TEXTS)
    img = ov_embedder.embed_images(images)  # batches of 4: sizes 4 and 3
    one = np.concatenate([ov_embedder.embed_pixels(ov_embedder.preprocess([im])) for im in images[:3]])
    txt = ov_embedder.embed_texts(TEXTS)  # batches of 4 and 2, padded to different lengths
    txt1 = np.concatenate([ov_embedder.embed_texts([t]) for t in TEXTS])  # batch 1: no padding
    empty = blip_embedder.preprocess([make_image(0)])[:0]
    got_empty, want_empty = ov_embedder.embed_pixels_with_tokens(empty), blip_embedder.embed_pixels_with_tokens(empty)
    assert [a.shape for a in got_empty] == [b.shape for b in want_empty]
    for got, ref in ((img, ref_img), (one, ref_img[:3]), (txt, ref_txt), (txt1, ref_txt)):
        assert got.shape == ref.shape and got.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-4)
        assert _cos(got, ref).min() >= MIN_COS, _cos(got, ref)
    # The same text alone and padded in a batch: the attention mask is part of the exported graph.
    assert _cos(txt, txt1).min() >= MIN_COS
    # Search ranks agree with the exact ones up to what the measured vector errors can swap.
    err = np.linalg.norm(img - ref_img, axis=-1).max() + np.linalg.norm(txt - ref_txt, axis=-1).max()
    tol = 2 * err + 1e-6
    assert tol < 0.1
    ids = np.arange(len(images))
    for q in range(len(TEXTS)):
        got_order = np.argsort(-(img @ txt[q]), kind="stable")[:5]
        assert_same_ranking(got_order, ids, ref_img @ ref_txt[q], 5, tol=tol)


def test_vision_tokens_come_from_the_same_forward(ov_embedder, blip_embedder):
    pixels = blip_embedder.preprocess([make_image(i) for i in range(3)])
    emb, tokens = ov_embedder.embed_pixels_with_tokens(pixels)
    ref = blip_embedder.vision_tokens(pixels).numpy()
    assert tokens.dtype == np.float16 and tokens.shape == ref.shape
    # Tokens (what ITM attends to) close to the fp32 ones, relative to their scale.
    assert np.abs(tokens.astype(np.float32) - ref).max() < 0.05 * np.abs(ref).max()
    assert _cos(emb, blip_embedder.embed_pixels(pixels)).min() >= MIN_COS
    # vision_tokens for the image stage runs on OpenVINO; the ITM stage stays on torch.
    np.testing.assert_allclose(ov_embedder.vision_tokens(pixels).numpy(), tokens, atol=1e-2)
    assert np.abs(ov_embedder.vision_tokens(pixels, stage="itm").numpy() - ref).max() < 0.05 * np.abs(ref).max()


def test_concurrent_callers_get_their_own_results(ov_embedder):
    want = {t: ov_embedder.embed_texts([t]) for t in TEXTS}
    got: dict[str, np.ndarray] = {}

    def run(t: str) -> None:
        for _ in range(3):
            got[t] = ov_embedder.embed_texts([t])

    threads = [threading.Thread(target=run, args=(t,)) for t in TEXTS]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t in TEXTS:
        np.testing.assert_allclose(got[t], want[t], atol=1e-6)


def _cache_files(cache: Path) -> dict[str, float]:
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}


def test_ir_cache_is_reused_and_a_damaged_one_rebuilt(tiny_models, tmp_path):
    cache = tmp_path / "cache"
    texts, images = TEXTS[:3], [make_image(i) for i in range(2)]
    before = CONVERSIONS.copy()
    first = _load(tiny_models["blip-itm"], fast_runtime="openvino", runtime_cache_dir=str(cache))
    ref_t, ref_i = first.embed_texts(texts), first.embed_images(images)
    assert CONVERSIONS["text"] == before["text"] + 1 and CONVERSIONS["image"] == before["image"] + 1
    files = _cache_files(cache)
    folders = sorted(p.name for p in cache.iterdir())
    assert [f.split("-")[1] for f in folders] == ["image", "text"]  # blip-<tower>-<key>, no temp leftovers
    assert {Path(f).name for f in files} == {"model.xml", "model.bin", "checksums.json"}
    assert str(cache) not in str(tiny_models["blip-itm"]) and not (tiny_models["blip-itm"] / "cache").exists()

    # A second load (as a second process would) reads the IR: no conversion, files untouched.
    second = _load(tiny_models["blip-itm"], fast_runtime="openvino", runtime_cache_dir=str(cache))
    np.testing.assert_allclose(second.embed_texts(texts), ref_t, atol=1e-6)
    np.testing.assert_allclose(second.embed_images(images), ref_i, atol=1e-6)
    assert CONVERSIONS["text"] == before["text"] + 1 and CONVERSIONS["image"] == before["image"] + 1
    assert _cache_files(cache) == files

    # Damage: flipped bytes in the text weights, a truncated image graph. Rebuilt, not a crash.
    text_bin = next(cache.glob("blip-text-*/model.bin"))
    data = bytearray(text_bin.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    text_bin.write_bytes(bytes(data))
    image_xml = next(cache.glob("blip-image-*/model.xml"))
    image_xml.write_text(image_xml.read_text()[:100])
    third = _load(tiny_models["blip-itm"], fast_runtime="openvino", runtime_cache_dir=str(cache))
    np.testing.assert_allclose(third.embed_texts(texts), ref_t, atol=1e-6)
    np.testing.assert_allclose(third.embed_images(images), ref_i, atol=1e-6)
    assert CONVERSIONS["text"] == before["text"] + 2 and CONVERSIONS["image"] == before["image"] + 2
    assert sorted(p.name for p in cache.iterdir()) == folders
    assert next(cache.glob("blip-text-*/model.bin")).read_bytes() != bytes(data)


def test_cache_key_follows_the_weights(tiny_models, tmp_path):
    """Another checkpoint of the same shapes gets its own cache entries."""
    import torch

    a = _load(tiny_models["blip-itm"], fast_runtime="openvino", runtime_cache_dir=str(tmp_path))
    b = _load(tiny_models["blip-itm"], fast_runtime="openvino", runtime_cache_dir=str(tmp_path))
    assert a._ov.cache_path("text") == b._ov.cache_path("text")
    with torch.no_grad():
        b.model.text_encoder.embeddings.word_embeddings.weight[5] += 1.0
    assert a._ov.cache_path("text") != b._ov.cache_path("text")
    assert a._ov.cache_path("image") == b._ov.cache_path("image")


def test_openvino_requested_but_missing_is_a_config_error(tiny_models, monkeypatch):
    def missing():
        raise ImportError("No module named 'openvino'")

    monkeypatch.setattr(ov_runtime, "import_openvino", missing)
    with pytest.raises(ConfigError, match=r"pip install -e \.\[openvino\]"):
        _load(tiny_models["blip-itm"], fast_runtime="openvino")
    # auto falls back to torch bf16 autocast (or fp32 without native bf16); exact is unaffected.
    auto = _load(tiny_models["blip-itm"], fast_runtime="auto")
    assert auto.stage_runtimes()["image"] == "torch" and auto._ov is None
    assert _load(tiny_models["blip-itm"], fast_runtime="openvino", precision="exact")._ov is None
    with pytest.raises(ConfigError, match="Unknown fast runtime"):
        _load(tiny_models["blip-itm"], fast_runtime="onnx")


def test_exact_never_builds_an_openvino_model(tiny_models, blip_embedder, tmp_path):
    before = CONVERSIONS.copy()
    exact = _load(tiny_models["blip-itm"], precision="exact", fast_runtime="openvino", runtime_cache_dir=str(tmp_path))
    assert exact._ov is None and exact.stage_runtimes() == {"image": "torch", "text": "torch", "itm": "torch"}
    images = [make_image(i) for i in range(3)]
    np.testing.assert_array_equal(exact.embed_images(images), blip_embedder.embed_images(images))
    np.testing.assert_array_equal(exact.embed_texts(TEXTS), blip_embedder.embed_texts(TEXTS))
    assert CONVERSIONS == before and not any(tmp_path.iterdir())


def test_auto_picks_openvino_only_on_native_bf16(tiny_models, monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=None: frozenset(AVX2_ONLY))
    avx2 = _load(tiny_models["blip-itm"])  # fast_runtime defaults to auto
    assert avx2._ov is None and avx2.stage_dtypes()["image"] == "fp32"
    assert avx2.stage_runtime("image") == "torch fp32"
    if precision.isa_capped_below_avx512():  # e.g. ONEDNN_MAX_CPU_ISA=AVX2: bf16 kernels cannot be built
        pytest.skip("kernel libraries capped below AVX-512 in this run: the native-bf16 half cannot run")
    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=None: frozenset(ZEN4))
    native = _load(tiny_models["blip-itm"])
    assert native.stage_runtimes() == {"image": "openvino", "text": "openvino", "itm": "torch"}
    assert native.stage_runtime("text") == "openvino bf16" and native.stage_dtypes()["text"] == "bf16"
    assert _load(tiny_models["blip-itm"], fast_runtime="torch")._ov is None
    # Families other than BLIP keep torch whatever the setting (BLIP-2 loads, no OpenVINO).
    blip2 = _load(tiny_models["blip2-itm"], fast_runtime="openvino")
    assert blip2.stage_runtimes()["image"] == "torch"


def test_index_and_search_fast_openvino_end_to_end(settings, tiny_models, tmp_path):
    """Settings -> load_model -> OpenVINO towers: an indexed collection's text->image scores stay
    within 0.01 of an exact collection of the same images, and the runtime is recorded."""
    from search.engine import SearchEngine
    from service.collections import list_collections
    from service.indexing import index_paths
    from service.models import load_model
    from storage.collection import Collection
    from tests.helpers import write_images

    model = str(tiny_models["blip-itm"])
    write_images(tmp_path / "imgs", 8)
    exact_s = settings.model_copy(update={"model": model})
    fast_s = exact_s.model_copy(update={"precision": "fast", "fast_runtime": "openvino"})
    exact_e, fast_e = load_model(exact_s, model), load_model(fast_s, model)
    assert fast_e.stage_runtimes()["image"] == "openvino" and exact_e.stage_runtimes()["image"] == "torch"
    index_paths(exact_s, [tmp_path / "imgs"], "ref", embedder=exact_e, progress=False)
    index_paths(fast_s, [tmp_path / "imgs"], "ov", embedder=fast_e, progress=False)
    # Towers convert on first use: indexing needed only the image tower.
    cache = settings.data_dir / "cache" / "openvino"
    assert [p.name.split("-")[1] for p in cache.iterdir()] == ["image"]
    m = Collection.open(settings.data_dir, "ov").manifest
    assert (m.precision, m.embed_runtime) == ("fast", "openvino")
    assert Collection.open(settings.data_dir, "ref").manifest.embed_runtime == "torch"
    listed = {c["name"]: c for c in list_collections(settings)}
    assert listed["ov"]["embed_runtime"] == "openvino"
    for text in TEXTS:
        got = SearchEngine.open(Collection.open(settings.data_dir, "ov"), fast_e).search_text(text, k=8)
        ref = SearchEngine.open(Collection.open(settings.data_dir, "ref"), exact_e).search_text(text, k=8)
        a, b = {h.uri: h.score for h in got.hits}, {h.uri: h.score for h in ref.hits}
        assert a.keys() == b.keys() and len(a) == 8
        assert max(abs(a[u] - b[u]) for u in a) < 0.01
    # The IR cache lives under the data dir (not the model directory), one folder per tower.
    assert sorted(p.name.split("-")[1] for p in cache.iterdir()) == ["image", "text"]


def test_cli_fast_runtime_setting(tmp_path, monkeypatch, tiny_models):
    import json

    from typer.testing import CliRunner

    from cli.main import app
    from tests.helpers import write_images

    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
    monkeypatch.setenv("BLIPSEARCH_PRECISION", "fast")
    monkeypatch.setenv("BLIPSEARCH_FAST_RUNTIME", "openvino")
    monkeypatch.setenv("BLIPSEARCH_JPEG_DRAFT", "false")
    write_images(tmp_path / "a", 3)
    runner = CliRunner()
    result = runner.invoke(app, ["index", str(tmp_path / "a"), "-c", "p", "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    stats = json.loads(runner.invoke(app, ["index-stats", "-c", "p", "--json"]).stdout)
    assert (stats["precision"], stats["embed_runtime"]) == ("fast", "openvino")
    assert "by openvino" in runner.invoke(app, ["index-stats", "-c", "p"]).stdout
    bf16 = "bf16" if precision.has_native_bf16() else "fp32"
    assert f"fast/{bf16}/openvino" in runner.invoke(app, ["collections"]).stdout
    assert (tmp_path / "data" / "cache" / "openvino").is_dir()

    def missing():
        raise ImportError("No module named 'openvino'")

    monkeypatch.setattr(ov_runtime, "import_openvino", missing)
    result = runner.invoke(app, ["index", str(tmp_path / "a"), "-c", "q", "--json"])
    assert result.exit_code == 2 and "pip install -e .[openvino]" in result.stderr, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert os.environ["BLIPSEARCH_FAST_RUNTIME"] == "openvino"
    monkeypatch.setenv("BLIPSEARCH_FAST_RUNTIME", "onnx")  # not a runtime: one line, exit 2
    result = runner.invoke(app, ["collections"])
    assert result.exit_code == 2 and "BLIPSEARCH_FAST_RUNTIME" in result.stderr, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout


def test_eval_retrieval_runs_exact_unless_asked(tmp_path, monkeypatch, tiny_models):
    """`eval retrieval` is exact by default whatever BLIPSEARCH_PRECISION says; its own
    --precision fast loads the fast model (here: OpenVINO, made unavailable)."""
    import json

    from typer.testing import CliRunner

    from cli.main import app
    from tests.helpers import write_images

    paths = write_images(tmp_path / "images", 4)
    ann = tmp_path / "ann.jsonl"
    ann.write_text(
        "".join(json.dumps({"image": p.name, "captions": [f"shape {i}"]}) + "\n" for i, p in enumerate(paths))
    )
    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
    monkeypatch.setenv("BLIPSEARCH_PRECISION", "fast")
    monkeypatch.setenv("BLIPSEARCH_FAST_RUNTIME", "openvino")

    def missing():
        raise ImportError("No module named 'openvino'")

    monkeypatch.setattr(ov_runtime, "import_openvino", missing)
    args = ["eval", "retrieval", "--annotations", str(ann), "--images", str(tmp_path / "images"), "--split", ""]
    args += ["--no-itm", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    result = CliRunner().invoke(app, [*args, "--precision", "fast"])
    assert result.exit_code == 2 and "pip install -e .[openvino]" in result.stderr
