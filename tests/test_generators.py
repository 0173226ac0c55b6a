"""InstructBLIP and LLaVA: captions equal transformers' generate with the same prompt (library,
CLI, API, index-time and collection captioning), yes/no scores equal the first-token
probabilities computed with a plain forward, and the memory refusal before loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from transformers import AutoProcessor, InstructBlipForConditionalGeneration, LlavaForConditionalGeneration
from typer.testing import CliRunner

from blipsearch.errors import InsufficientMemoryError, ModelLoadError
from models.captioners import Decoding, load_captioner
from models.memory import check_fits, estimate_parameters
from models.vqa import VisualQuestionScorer, answer_token_ids
from tests.helpers import make_image, write_images

CLASSES = {"instructblip": InstructBlipForConditionalGeneration, "llava": LlavaForConditionalGeneration}


@pytest.fixture(scope="module")
def references(tiny_generators):
    """transformers' own model and processor per family, loaded directly."""
    return {
        name: (cls.from_pretrained(tiny_generators[name]).eval(), AutoProcessor.from_pretrained(tiny_generators[name]))
        for name, cls in CLASSES.items()
    }


@pytest.fixture(scope="module")
def captioners(tiny_generators):
    return {name: load_captioner(str(tiny_generators[name]), device="cpu", batch_size=3) for name in CLASSES}


def _reference_inputs(family: str, processor, image: Image.Image, prompt: str):
    text = prompt
    if family == "llava":
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    return processor(images=image, text=text, return_tensors="pt")


def reference_caption(family, model, processor, image, prompt, max_new_tokens=8, num_beams=1) -> str:
    inputs = _reference_inputs(family, processor, image, prompt)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
    if family == "llava":  # decoder-only: the prompt ids come first
        out = out[:, inputs["input_ids"].shape[1] :]
    return processor.decode(out[0], skip_special_tokens=True).strip()


@pytest.mark.parametrize(
    "decoding",
    [
        Decoding(max_new_tokens=8, prompt="describe the image"),
        Decoding(max_new_tokens=6, num_beams=3, prompt="what is this?"),
        Decoding(max_new_tokens=5),  # the family's default instruction
    ],
    ids=["greedy", "beam3", "default-prompt"],
)
@pytest.mark.parametrize("family", list(CLASSES))
def test_captions_equal_transformers_generate(captioners, references, family, decoding):
    cap = captioners[family]
    model, processor = references[family]
    assert cap.family == family and cap.supports_vqa
    images = [make_image(i) for i in range(4)]  # batches of 3 and 1
    ours = cap.caption(images, decoding)
    prompt = decoding.prompt or cap.default_prompt
    for img, got in zip(images, ours, strict=True):
        ref = reference_caption(family, model, processor, img, prompt, decoding.max_new_tokens, decoding.num_beams)
        assert got == ref
    assert len(set(ours)) > 1  # the image changes the caption
    if family == "llava" and decoding.prompt:
        assert not any(c.startswith(("USER", decoding.prompt)) for c in ours)  # only the new tokens


def test_caption_cli_equals_transformers(tiny_generators, tiny_models, references, tmp_path, monkeypatch):
    """`caption FILE --caption-model DIR --prompt "describe the image" --max-new-tokens 8 --json`."""
    from cli.main import app

    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = write_images(tmp_path / "in", 3)
    runner = CliRunner()
    for family in CLASSES:
        args = ["caption", *map(str, files), "--caption-model", str(tiny_generators[family])]
        res = runner.invoke(app, [*args, "--prompt", "describe the image", "--max-new-tokens", "8", "--json"])
        assert res.exit_code == 0, (res.stdout, res.stderr)
        out = json.loads(res.stdout)
        assert out["caption_model"] == str(tiny_generators[family].resolve())
        model, processor = references[family]
        for f, r in zip(files, out["results"], strict=True):
            img = Image.open(f).convert("RGB")
            assert r["caption"] == reference_caption(family, model, processor, img, "describe the image")

    # index --captions with an instruction model and a prompt: the stored caption is the same.
    monkeypatch.setenv("BLIPSEARCH_JPEG_DRAFT", "0")
    args = ["index", str(tmp_path / "in"), "-c", "capt", "--model", str(tiny_models["blip-itm"]), "--captions"]
    args += ["--caption-model", str(tiny_generators["llava"]), "--prompt", "describe the image"]
    args += ["--max-new-tokens", "8"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.stdout, res.stderr)
    from storage.collection import Collection

    rows = Collection.open(tmp_path / "data", "capt").read_table(["uri", "caption"]).to_pylist()
    model, processor = references["llava"]
    assert len(rows) == 3
    for r in rows:
        img = Image.open(r["uri"]).convert("RGB")
        assert r["caption"] == reference_caption("llava", model, processor, img, "describe the image")


def test_index_with_captions_and_recaption(tiny_generators, captioners, settings, blip_embedder, tmp_path):
    from indexer.captions import caption_collection
    from service.indexing import index_paths
    from storage.collection import Collection

    write_images(tmp_path / "in", 5)
    dec = Decoding(max_new_tokens=6, prompt="describe the image")
    llava, iblip = captioners["llava"], captioners["instructblip"]
    index_paths(settings, [tmp_path / "in"], "c", embedder=blip_embedder, captioner=llava, decoding=dec, progress=False)
    coll = Collection.open(settings.data_dir, "c")
    rows = coll.read_table(["uri", "caption", "caption_model"]).to_pylist()
    for r in rows:
        assert r["caption_model"] == llava.model_id
        assert r["caption"] == llava.caption([Image.open(r["uri"]).convert("RGB")], dec)[0]
    # Re-captioning with another model does every record once, then nothing.
    first = caption_collection(coll, iblip, dec, commit_every=2, progress=False)
    assert (first["captioned"], first["failed"]) == (5, 0)
    assert caption_collection(coll, iblip, dec, progress=False)["captioned"] == 0
    rows = coll.read_table(["uri", "caption", "caption_model"]).to_pylist()
    for r in rows:
        assert r["caption_model"] == iblip.model_id
        assert r["caption"] == iblip.caption([Image.open(r["uri"]).convert("RGB")], dec)[0]


def test_caption_api_with_prompt(tiny_generators, tmp_path, captioners):
    import io

    from api.app import create_app
    from blipsearch.config import Settings

    settings = Settings(data_dir=tmp_path / "data", caption_model=str(tiny_generators["llava"]))
    buf = io.BytesIO()
    make_image(3).save(buf, "PNG")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        form = {"prompt": "describe the image", "max_new_tokens": "7"}
        r = client.post("/v1/captions", files={"file": ("x.png", buf.getvalue(), "image/png")}, data=form)
        assert r.status_code == 200, r.text
        expected = captioners["llava"].caption([make_image(3)], Decoding(max_new_tokens=7, prompt="describe the image"))
        # the API names a local model by its folder, never its absolute path (api/paths.py)
        assert r.json() == {"caption_model": Path(captioners["llava"].model_id).name, "caption": expected[0]}
        bad = client.post("/v1/captions", files={"file": ("x.png", buf.getvalue(), "image/png")}, data={"num_beams": 0})
        assert bad.status_code == 422


# -- visual questions -----------------------------------------------------------------------
def _first_token_probs(family, model, processor, image, question) -> torch.Tensor:
    """Softmax of the first generated token's logits, from one plain forward pass."""
    inputs = _reference_inputs(family, processor, image, question)
    with torch.no_grad():
        if model.config.text_config.is_encoder_decoder:
            start = torch.tensor([[model.config.text_config.decoder_start_token_id]])
            logits = model(**inputs, decoder_input_ids=start).logits[0, -1]
        else:
            logits = model(**inputs).logits[0, -1]
    return torch.softmax(logits.double(), dim=-1)


@pytest.mark.parametrize("family", list(CLASSES))
def test_vqa_scores_equal_first_token_probabilities(captioners, references, family):
    vqa = VisualQuestionScorer(captioners[family])
    model, processor = references[family]
    tok = processor.tokenizer
    # The generated sentencepiece tokenizer has ▁yes/▁Yes/▁YES and ▁no/▁No/▁NO.
    assert sorted(tok.convert_ids_to_tokens(vqa.yes_ids)) == ["▁YES", "▁Yes", "▁yes"]
    assert sorted(tok.convert_ids_to_tokens(vqa.no_ids)) == ["▁NO", "▁No", "▁no"]
    questions = ["is there a gun?", "is this a dog?"]
    images = [make_image(i) for i in range(4)]
    scores = vqa.score_images(images, questions)
    assert scores.shape == (4, 2)
    for i, img in enumerate(images):
        for j, q in enumerate(questions):
            p = _first_token_probs(family, model, processor, img, q)
            yes, no = float(p[vqa.yes_ids].sum()), float(p[vqa.no_ids].sum())
            assert scores[i, j] == pytest.approx(yes / (yes + no), abs=1e-4, rel=1e-3)
    assert np.ptp(scores) > 1e-6  # images and questions move the score


def test_answer_token_ids_only_single_tokens(captioners):
    tok = captioners["llava"].processor.tokenizer
    assert answer_token_ids(tok, ["yes"]) == [tok.convert_tokens_to_ids("▁yes")]
    assert answer_token_ids(tok, ["maybe"]) == []  # not in the vocabulary: <unk>, not counted


def test_caption_families_and_unsupported_checkpoints(tmp_path):
    from models.captioners import caption_families

    fams = {f["family"]: f for f in caption_families()}
    assert set(fams) == {"blip", "blip2", "instructblip", "llava"}
    assert fams["llava"]["capabilities"] == ["caption", "vqa"] and fams["blip"]["capabilities"] == ["caption"]
    assert fams["instructblip"]["class"] == "InstructBlipForConditionalGeneration"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match=r"model_type 'bert'.*InstructBlipForConditionalGeneration"):
        load_captioner(str(tmp_path), device="cpu")


def test_vqa_needs_an_instruction_model(tiny_models):
    with pytest.raises(ModelLoadError, match="cannot answer visual questions"):
        VisualQuestionScorer(load_captioner(str(tiny_models["blip-caption"]), device="cpu"))


# -- memory refusal -------------------------------------------------------------------------
def _huge_config_dir(tiny_generators, tmp_path):
    """A LLaVA config whose LLaMA has ~275B parameters: config.json only, no weights at all."""
    cfg = json.loads((tiny_generators["llava"] / "config.json").read_text())
    cfg["text_config"].update(
        hidden_size=16384, intermediate_size=65536, num_hidden_layers=64, num_attention_heads=128,
        num_key_value_heads=128,
    )  # fmt: skip
    out = tmp_path / "huge-llava"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def test_memory_refusal_from_config_before_loading(tiny_generators, tmp_path):
    path = _huge_config_dir(tiny_generators, tmp_path)
    with pytest.raises(InsufficientMemoryError) as err:
        load_captioner(str(path), device="cpu")
    msg = str(err.value)
    assert "Refusing to load" in msg and "config (meta device)" in msg and "in float32 on cpu" in msg
    # Without the check the same directory fails only when loading weights (there are none):
    with pytest.raises(ModelLoadError) as err2:
        load_captioner(str(path), device="cpu", memory_headroom=None)
    assert not isinstance(err2.value, InsufficientMemoryError)


def test_memory_refusal_from_safetensors_index(tiny_generators, tmp_path):
    from transformers import AutoConfig

    path = tmp_path / "big-iblip"
    shutil.copytree(tiny_generators["instructblip"], path)
    index = {"metadata": {"total_size": 7_000_000_000 * 4}, "weight_map": {}}  # 7B parameters stored in fp32
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    config = AutoConfig.from_pretrained(path)
    cls, cpu = InstructBlipForConditionalGeneration, torch.device("cpu")
    with pytest.raises(InsufficientMemoryError, match=r"7\.00B parameters .*26\.1 GiB in float32.*safetensors index"):
        check_fits(str(path), config, cls, torch.float32, cpu, headroom=1.0, available=16 << 30)
    # bf16 halves the bytes: 13.0 GiB fits in 16 GiB.
    assert check_fits(str(path), config, cls, torch.bfloat16, cpu, headroom=1.0, available=16 << 30).parameters == 7e9


def test_parameter_estimates_equal_the_loaded_models(tiny_generators, references):
    from transformers import AutoConfig

    from models.memory import _from_config

    for family, cls in CLASSES.items():
        path = tiny_generators[family]
        model = references[family][0]
        n = sum(p.numel() for p in model.parameters())
        config = AutoConfig.from_pretrained(path)
        assert _from_config(cls, config).parameters == n
        est = estimate_parameters(str(path), config, cls)  # the safetensors headers
        stored = {t.data_ptr(): t.numel() for t in model.state_dict().values()}  # tied weights are saved once
        assert est.how == "safetensors headers" and est.parameters == sum(stored.values())
        fits = check_fits(str(path), config, cls, torch.float32, torch.device("cpu"), available=n * 4 * 2)
        assert fits.parameters == est.parameters
        with pytest.raises(InsufficientMemoryError):
            check_fits(str(path), config, cls, torch.float32, torch.device("cpu"), available=n * 4 // 2)


def test_memory_refusal_cli_exit_code(tiny_generators, tmp_path, monkeypatch):
    from cli.main import app

    path = _huge_config_dir(tiny_generators, tmp_path)
    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    img = write_images(tmp_path / "in", 1)[0]
    res = CliRunner().invoke(app, ["caption", str(img), "--caption-model", str(path), "--json"])
    assert res.exit_code == InsufficientMemoryError.exit_code, (res.stdout, res.stderr)
    assert "Refusing to load" in res.stderr and "Traceback" not in res.stderr
