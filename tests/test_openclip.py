"""OpenCLIP checkpoints (the ``openclip`` extra): a tiny random checkpoint in OpenCLIP's layout,
built here, loads through blipsearch and gives open_clip's own ``encode_image`` / ``encode_text``;
weights load only through safe formats; collections of it search as brute force says.

open_clip needs a torchvision that pairs with torch, so these run in their own venv
(scripts/openclip_tests.sh); in a venv without open_clip they skip, except the checks of what
happens there (a clear install message; ``models --model`` still reads the config)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from blipsearch.errors import ModelLoadError
from cli.main import app
from models import load_embedder
from tests.helpers import make_image, write_images

HAS_OPEN_CLIP = (
    importlib.util.find_spec("open_clip") is not None and importlib.util.find_spec("torchvision") is not None
)
needs_open_clip = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip not installed (scripts/openclip_tests.sh)")

MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}
PREPROCESS_CFG = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}
TEXTS = ["a red square on a white background", "two dogs running on the beach", "一只红色的猫", "Straße im Schnee"]


def write_checkpoint(out: Path, seed: int = 0, weights: str = "safetensors") -> Path:
    """OpenCLIP's hub layout: open_clip_config.json + the weights (random, from the config dict)."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.CLIP(**MODEL_CFG).eval()
    with torch.no_grad():  # a wider init than OpenCLIP's, so that tiny random towers tell inputs apart
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    out.mkdir(parents=True, exist_ok=True)
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if weights == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(out / "open_clip_model.safetensors"))
    else:
        torch.save(state, out / "open_clip_pytorch_model.bin")
    return out


def reference(path: Path, images: list[Image.Image], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """open_clip's own model, transform and tokenizer, loaded its own way."""
    import open_clip
    import torch

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    model.eval()
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(i) for i in images]), normalize=True)
        txt = model.encode_text(tokenizer(texts), normalize=True)
    return img.numpy(), txt.numpy()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    if not HAS_OPEN_CLIP:
        pytest.skip("open_clip not installed (scripts/openclip_tests.sh)")
    return write_checkpoint(tmp_path_factory.mktemp("openclip") / "tiny")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@needs_open_clip
def test_embeddings_equal_open_clip_encode(ckpt):
    emb = load_embedder(str(ckpt), device="cpu", batch_size=3)
    assert (emb.family, emb.dim, emb.multilingual, emb.has_itm) == ("openclip", 32, False, False)
    images = [make_image(i) for i in range(5)]
    ours_img, ours_txt = emb.embed_images(images), emb.embed_texts(TEXTS)
    ref_img, ref_txt = reference(ckpt, images, TEXTS)
    assert _cos(ours_img, ref_img).min() >= 0.99999 and _cos(ours_txt, ref_txt).min() >= 0.99999
    np.testing.assert_allclose(ours_img, ref_img, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours_txt, ref_txt, atol=1e-5, rtol=0)
    sims = ours_img @ ours_txt.T
    assert np.ptp(sims[:, 0]) > 1e-3 and np.ptp(sims[0]) > 1e-3  # inputs are told apart
    import open_clip

    tok = open_clip.get_tokenizer(f"local-dir:{ckpt}")
    assert emb.tokenize(TEXTS)["input_ids"].tolist() == tok(TEXTS).tolist()  # texts reach its tokenizer as given


@needs_open_clip
def test_bin_weights_load_with_weights_only_and_pickled_code_is_refused(tmp_path, ckpt):
    import torch

    binary = write_checkpoint(tmp_path / "bin", weights="bin")
    emb = load_embedder(str(binary), device="cpu")
    ref_img, _ = reference(binary, [make_image(1)], TEXTS[:1])
    np.testing.assert_allclose(emb.embed_images([make_image(1)]), ref_img, atol=1e-5, rtol=0)

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):  # unpickling this would run Path.touch(marker)
            return (Path.touch, (marker,))

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "open_clip_config.json").write_text((binary / "open_clip_config.json").read_text())
    torch.save({"visual.proj": Exploit()}, evil / "open_clip_pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="OpenCLIP"):
        load_embedder(str(evil), device="cpu")
    assert not marker.exists()

    only_pth = tmp_path / "pth"
    only_pth.mkdir()
    (only_pth / "open_clip_config.json").write_text((binary / "open_clip_config.json").read_text())
    (only_pth / "model.pth").write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_embedder(str(only_pth), device="cpu")


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BLIPSEARCH_JPEG_DRAFT", "0")
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> dict:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (result.stdout, result.stderr)
        if code:
            return {"stderr": result.stderr}
        return json.loads(result.stdout) if "--json" in args and result.stdout.strip() else {}

    return run


@needs_open_clip
def test_cli_index_and_search_equal_brute_force(cli, ckpt, tmp_path):
    paths = write_images(tmp_path / "imgs", 10)
    assert cli("index", str(tmp_path / "imgs"), "-c", "oc", "--model", str(ckpt), "--json")["added"] == 10
    images = [Image.open(p).convert("RGB") for p in paths]
    ref_img, ref_txt = reference(ckpt, images, TEXTS[:1])
    for hits, q in (
        (cli("search", TEXTS[0], "-c", "oc", "-k", "5", "--json")["results"], ref_txt[0]),
        (cli("search", "--image", str(paths[4]), "-c", "oc", "-k", "5", "--json")["results"], ref_img[4]),
    ):
        sims = ref_img.astype(np.float64) @ q.astype(np.float64)
        by_uri = {str(p.resolve()): float(s) for p, s in zip(paths, sims, strict=True)}
        want = np.sort(sims)[::-1][:5]
        np.testing.assert_allclose([h["score"] for h in hits], want, atol=1e-5, rtol=0)
        np.testing.assert_allclose([by_uri[h["uri"]] for h in hits], want, atol=1e-5, rtol=0)
    info = cli("collections", "--json")["collections"][0]
    assert info["model_id"] == str(ckpt.resolve()) and info["dim"] == 32


def test_models_reads_openclip_config_without_open_clip(cli, tmp_path):
    """Config only: the dimension and the multilingual flag, whether or not open_clip is installed."""
    for name, text_cfg, multilingual in (
        ("en", MODEL_CFG["text_cfg"], False),
        ("xlmr", {"hf_model_name": "xlm-roberta-base", "hf_tokenizer_name": "xlm-roberta-base"}, True),
    ):
        d = tmp_path / name
        d.mkdir()
        (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": {**MODEL_CFG, "text_cfg": text_cfg}}))
        one = cli("models", "--model", str(d), "--json")["checkpoint"]
        assert (one["family"], one["dim"], one["multilingual"]) == ("openclip", 32, multilingual)
    fams = {f["family"]: f for f in cli("models", "--json")["families"]}
    assert fams["openclip"]["multilingual"] == "some" and fams["openclip"]["capabilities"] == ["embed"]
    offline = cli("models", "--model", "hf-hub:laion/not-cached", code=5)["stderr"]  # model_unavailable
    assert "Could not fetch the OpenCLIP checkpoint" in offline and "Traceback" not in offline
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "open_clip_config.json").write_text("[1, 2]")
    assert "model_cfg" in cli("models", "--model", str(tmp_path / "bad"), code=5)["stderr"]


@pytest.mark.skipif(HAS_OPEN_CLIP, reason="checks the message where open_clip is absent")
def test_without_open_clip_loading_says_how_to_install(tmp_path):
    d = tmp_path / "oc"
    d.mkdir()
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": MODEL_CFG}))
    (d / "open_clip_model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"blipsearch\[openclip\]"):
        load_embedder(str(d), device="cpu")
