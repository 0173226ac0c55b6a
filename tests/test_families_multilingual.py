"""Multilingual embedding families: SigLIP 2 (NaFlex), MetaCLIP 2, AltCLIP and Chinese-CLIP against
transformers' own features, multilingual queries reaching the tokenizer unchanged, and every
feature on their collections (index, search, filters, hybrid, image→text, reembed, cross-family ITM
re-rank, moderation, eval, /v1/embed, clip-retrieval's ``use_mclip``, ``models --json``)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from models import load_embedder
from models.siglip2 import unpack
from models.text_preprocess import pre_caption
from tests.helpers import make_image, write_images
from tests.test_families import _blip_itm_prob

FAMILIES = {
    "siglip2": "Siglip2Model",
    "metaclip_2": "MetaClip2Model",
    "altclip": "AltCLIPModel",
    "chinese_clip": "ChineseCLIPModel",
}
QUERIES = {
    "zh": "一只红色的猫坐在白色的桌子上",
    "ja": "夕暮れの浜辺を走る二匹の犬",
    "ar": "قطة حمراء تجلس على الطاولة",
    "hi": "समुद्र तट पर दौड़ते हुए दो कुत्ते",
    "es": "Dos perros corriendo en la playa al atardecer",
    "de": "Ein rotes Quadrat auf weißem Hintergrund, Straße",
}
TEXTS = ["a red square on a white background", *QUERIES.values()]


@pytest.fixture(scope="module")
def ml_models(tmp_path_factory):
    from make_test_models import COMMON_WORDS
    from model_families_multilingual import make_multilingual

    return make_multilingual(tmp_path_factory.mktemp("ml-models"), 40, list(COMMON_WORDS))


@pytest.fixture(scope="module")
def ml_embedders(ml_models):
    return {f: load_embedder(str(ml_models[f]), device="cpu", batch_size=4) for f in FAMILIES}


def _padding(family: str) -> bool | str:
    return "max_length" if family == "siglip2" else True  # SigLIP 2: as Siglip2Processor pads


def _reference(path, family, images, texts):
    """transformers' own L2-normalised get_image_features / get_text_features, via the checkpoint's processor."""
    model = getattr(transformers, FAMILIES[family]).from_pretrained(path).eval()
    proc = transformers.AutoProcessor.from_pretrained(path)
    with torch.no_grad():
        img = model.get_image_features(**proc(images=images, return_tensors="pt")).pooler_output
        txt = model.get_text_features(**proc(text=texts, padding=_padding(family), return_tensors="pt"))
    return F.normalize(img, dim=-1).numpy(), F.normalize(txt.pooler_output, dim=-1).numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / np.linalg.norm(a64, axis=1) / np.linalg.norm(b64, axis=1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_embeddings_equal_transformers_features(ml_models, ml_embedders, family):
    emb = ml_embedders[family]
    assert emb.family == family and emb.multilingual and not emb.has_itm
    images = [make_image(i) for i in range(5)]  # varied sizes and aspect ratios (NaFlex keeps them)
    ours_img, ours_txt = emb.embed_images(images), emb.embed_texts(TEXTS)
    ref_img, ref_txt = _reference(ml_models[family], family, images, TEXTS)
    assert ours_img.shape == (5, emb.dim) and ours_txt.shape == (len(TEXTS), emb.dim)
    assert ours_img.dtype == np.float32 and emb.describe()["multilingual"] is True
    assert _cosines(ours_img, ref_img).min() >= 0.99999 and _cosines(ours_txt, ref_txt).min() >= 0.99999
    np.testing.assert_allclose(ours_img, ref_img, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours_txt, ref_txt, atol=1e-5, rtol=0)
    sims = ours_img @ ours_txt.T
    assert np.ptp(sims[:, 0]) > 1e-3 and np.ptp(sims[0]) > 1e-3  # images and texts are told apart
    assert np.ptp(ours_txt @ ours_txt[1]) > 1e-3  # and the languages from each other


def test_siglip2_prepares_inputs_as_its_processor_call(tmp_path):
    """Siglip2Processor's call applies its own max_num_patches / max_length over the image processor's
    and tokenizer's attributes; blipsearch's inputs (and so its vectors) are the call's."""
    from make_test_models import COMMON_WORDS
    from model_families_multilingual import make_siglip2

    path = make_siglip2(tmp_path / "s2", 7, list(COMMON_WORDS), image_processor_patches=64, tokenizer_max_length=24)
    emb = load_embedder(str(path), device="cpu")
    proc = transformers.AutoProcessor.from_pretrained(path)
    images = [make_image(i, (200, 90)) for i in range(2)]
    want = proc(images=images, text=TEXTS[:2], return_tensors="np")
    pixels, mask, shapes = unpack(emb.preprocess(images))
    np.testing.assert_array_equal(pixels.numpy(), want["pixel_values"])
    np.testing.assert_array_equal(mask.numpy(), want["pixel_attention_mask"])
    np.testing.assert_array_equal(shapes.numpy(), want["spatial_shapes"])
    assert emb.tokenize(TEXTS[:2])["input_ids"].tolist() == want["input_ids"].tolist()
    ref_img, ref_txt = _reference(path, "siglip2", images, TEXTS[:2])
    np.testing.assert_allclose(emb.embed_images(images), ref_img, atol=1e-5, rtol=0)
    np.testing.assert_allclose(emb.embed_texts(TEXTS[:2]), ref_txt, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_multilingual_queries_reach_the_tokenizer_unchanged(ml_models, ml_embedders, family):
    """Token for token what the family's own tokenizer makes of the raw query: no pre_caption, no folding."""
    emb = ml_embedders[family]
    tok = transformers.AutoTokenizer.from_pretrained(ml_models[family])
    for lang, query in QUERIES.items():
        ours = emb.tokenize([query])["input_ids"][0].tolist()
        ref = tok([query], padding=_padding(family), max_length=emb.max_text_tokens, truncation=True)["input_ids"][0]
        assert ours == list(ref), lang
        real = [t for t in ours if t not in (tok.pad_token_id, tok.unk_token_id, *tok.all_special_ids)]
        assert len(real) >= 2, (lang, tok.convert_ids_to_tokens(ours))  # the script tokenizes into real pieces


def test_blip_alone_applies_pre_caption(tiny_models, blip_embedder):
    """The BLIP families are the ones that pre-process (pre_caption lower-cases, drops punctuation)."""
    tok = transformers.AutoTokenizer.from_pretrained(tiny_models["blip-itm"])
    query = QUERIES["de"]
    ids = blip_embedder.tokenize([query])["input_ids"][0].tolist()
    assert ids == tok([pre_caption(query)])["input_ids"][0] and pre_caption(query) != query


@pytest.fixture
def cli(tmp_path, monkeypatch, tiny_models):
    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
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


def _assert_brute_force(hits, paths, ref_img, q, k):
    """The hits are the top k of brute force over the reference embeddings, scores within 1e-5 (up to ties)."""
    sims = ref_img.astype(np.float64) @ q.astype(np.float64)
    by_uri = {str(p.resolve()): float(s) for p, s in zip(paths, sims, strict=True)}
    want = np.sort(sims)[::-1][:k]
    assert len(hits) == k
    np.testing.assert_allclose([h["score"] for h in hits], want, atol=1e-5, rtol=0)
    np.testing.assert_allclose([by_uri[h["uri"]] for h in hits], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_cli_collection_search_filters_hybrid_and_image_to_text(cli, ml_models, tmp_path, family):
    paths = write_images(tmp_path / "imgs" / "a", 6) + write_images(tmp_path / "imgs" / "b", 6, start=6)
    model = str(ml_models[family])
    assert cli("index", str(tmp_path / "imgs"), "-c", "c", "--model", model, "--json")["added"] == 12
    images = [Image.open(p).convert("RGB") for p in paths]
    query = QUERIES["zh"] if family == "chinese_clip" else QUERIES["es"]
    ref_img, ref_txt = _reference(ml_models[family], family, images, [query])
    _assert_brute_force(cli("search", query, "-c", "c", "-k", "5", "--json")["results"], paths, ref_img, ref_txt[0], 5)
    by_image = cli("search", "--image", str(paths[3]), "-c", "c", "-k", "4", "--json")["results"]
    _assert_brute_force(by_image, paths, ref_img, ref_img[3], 4)
    prefix = str((tmp_path / "imgs" / "b").resolve())
    filtered = cli("search", query, "-c", "c", "-k", "12", "--uri-prefix", prefix, "--json")["results"]
    assert len(filtered) == 6 and all(r["uri"].startswith(prefix) for r in filtered)
    hybrid = cli("search", query, "-c", "c", "-k", "5", "--mode", "hybrid", "--json")
    assert hybrid["mode"] == "hybrid" and len(hybrid["results"]) == 5
    info = cli("collections", "--json")["collections"][0]
    assert info["model_id"] == str(ml_models[family].resolve()) and info["dim"] == 32
    # image→text over a text collection in six languages
    texts = tmp_path / "t.csv"
    with texts.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([("id", "text"), *QUERIES.items()])
    assert cli("index-texts", str(texts), "-c", "txt", "--model", model, "--json")["added"] == len(QUERIES)
    hits = cli("search", "--image", str(paths[0]), "-c", "txt", "-k", "6", "--json")["results"]
    _, ref_texts = _reference(ml_models[family], family, images[:1], list(QUERIES.values()))
    want = ref_texts.astype(np.float64) @ ref_img[0].astype(np.float64)
    got = {h["text"]: h["score"] for h in hits}
    assert set(got) == set(QUERIES.values())  # the texts come back as written
    np.testing.assert_allclose([got[t] for t in QUERIES.values()], want, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_reembed_between_families_and_blip_itm_rerank(cli, ml_models, tiny_models, tmp_path):
    """CLIP → SigLIP 2 (NaFlex pixels through the reembed reader) → Chinese-CLIP, ids kept; then a
    BLIP ITM head re-ranks the Chinese-CLIP shortlist of a Chinese query."""
    write_images(tmp_path / "imgs", 8)
    cli("index", str(tmp_path / "imgs"), "-c", "r", "--model", str(tiny_models["clip"]), "--json")
    ids = {r["id"] for r in cli("search", "a red square", "-c", "r", "-k", "8", "--json")["results"]}
    for family in ("siglip2", "chinese_clip"):
        cli("reembed", "-c", "r", "--model", str(ml_models[family]), "--json")
        assert cli("collections", "--json")["collections"][0]["model_id"] == str(ml_models[family].resolve())
        emb = load_embedder(str(ml_models[family]), device="cpu")
        res = cli("search", QUERIES["zh"], "-c", "r", "-k", "8", "--json")["results"]
        assert {r["id"] for r in res} == ids
        q = emb.embed_texts([QUERIES["zh"]])[0]
        ref = emb.embed_images([Image.open(r["uri"]).convert("RGB") for r in res]) @ q
        np.testing.assert_allclose([r["score"] for r in res], ref, atol=1e-5, rtol=0)
    blip = str(tiny_models["blip-itm"])
    out = cli("search", "a red square", "-c", "r", "--rerank", "--rerank-model", blip, "-k", "4", "--json")
    hits = out["results"]
    enc = transformers.BlipProcessor.from_pretrained(blip).tokenizer.convert_tokens_to_ids("[ENC]")
    ref = _blip_itm_prob(blip, [Image.open(h["uri"]).convert("RGB") for h in hits], "a red square", enc)
    np.testing.assert_allclose([h["itm_score"] for h in hits], ref, atol=1e-5, rtol=0)
    err = cli("search", "x", "-c", "r", "--rerank", code=2)["stderr"]
    assert "ITM" in err and "--rerank-model" in err


def test_moderation_itc_screen_with_multilingual_prompts(ml_embedders, settings):
    from moderation.checks import screen_score
    from moderation.policy import parse_policy
    from service.moderation import build_moderator

    emb = ml_embedders["altclip"]
    prompts = [QUERIES["zh"], QUERIES["ar"]]
    raw = {
        "name": "p",
        "version": "1",
        "categories": [
            {"name": "all", "prompts": prompts, "itc_threshold": 0.0, "itm_threshold": 1.0, "action": "flag"},
        ],
    }
    moderator = build_moderator(settings, parse_policy(raw), embedder=emb)
    images = [make_image(i) for i in range(3)]
    prompt_emb = emb.embed_texts(prompts)
    for img, res in zip(images, moderator.check_images(images), strict=True):
        cos = (emb.embed_images([img]) @ prompt_emb.T).max()
        assert abs(res.categories[0].itc - cos) < 1e-5 and res.categories[0].itm is None
        assert res.decision == "flag" and abs(res.triggers[0]["score"] - screen_score(cos)) < 1e-6


def test_eval_retrieval_itc_on_metaclip2(ml_models, tmp_path, monkeypatch):
    from evaluation.data import load_annotations
    from evaluation.metrics import rank_from_scores, retrieval_metrics

    paths = write_images(tmp_path / "images", 6)
    langs = list(QUERIES.values())
    lines = [{"image": p.name, "captions": [langs[i], f"view {i}"]} for i, p in enumerate(paths)]
    ann = tmp_path / "ann.jsonl"
    ann.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["eval", "retrieval", "--annotations", str(ann), "--images", str(tmp_path / "images"), "--split", ""]
    result = CliRunner().invoke(app, [*args, "--model", str(ml_models["metaclip_2"]), "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    data = load_annotations(ann, tmp_path / "images", None, None)
    ref_img, ref_txt = _reference(
        ml_models["metaclip_2"], "metaclip_2", [Image.open(p).convert("RGB") for p in data.images], data.texts
    )
    sim = ref_img @ ref_txt.T
    ref = retrieval_metrics(rank_from_scores(sim), rank_from_scores(sim.T), data.img_to_txts, data.txt_to_img)
    for key in ("tr_r1", "tr_r5", "ir_r1", "ir_r5"):
        assert abs(payload["itc"][key] - ref[key]) < 1e-9


def test_api_embed_and_clip_retrieval_use_mclip(ml_models, ml_embedders, tiny_models, settings, tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from service.indexing import index_paths

    paths = write_images(tmp_path / "imgs", 6)
    emb = ml_embedders["siglip2"]
    index_paths(settings, [tmp_path / "imgs"], "ml", embedder=emb, progress=False)
    clip = load_embedder(str(tiny_models["clip"]), device="cpu")
    index_paths(settings, [tmp_path / "imgs"], "en", embedder=clip, progress=False)
    with TestClient(create_app(settings.model_copy(update={"expose_paths": True}))) as client:
        texts = list(QUERIES.values())
        r = client.post("/v1/embed", json={"texts": texts, "collection": "ml"})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["embeddings"]), emb.embed_texts(texts), atol=1e-5, rtol=0)
        with open(paths[2], "rb") as fh:
            r = client.post("/v1/embed", files={"files": ("q.jpg", fh, "image/jpeg")}, data={"collection": "ml"})
        assert r.status_code == 200, r.text
        ref = emb.embed_images([Image.open(paths[2]).convert("RGB")])
        np.testing.assert_allclose(np.array(r.json()["embeddings"]), ref, atol=1e-5, rtol=0)

        img_emb = emb.embed_images([Image.open(p).convert("RGB") for p in paths])
        for lang in ("ar", "ja"):
            r = client.post("/v1/search/text", json={"query": QUERIES[lang], "collection": "ml", "k": 6})
            assert r.status_code == 200, r.text
            want = np.sort(img_emb @ emb.embed_texts([QUERIES[lang]])[0])[::-1]
            np.testing.assert_allclose([h["score"] for h in r.json()["results"]], want, atol=1e-5, rtol=0)

        body = {"text": QUERIES["hi"], "indice_name": "ml", "num_images": 6, "use_mclip": True, "modality": "image"}
        r = client.post("/knn-service", json=body)
        assert r.status_code == 200, r.text
        want = np.sort(img_emb @ emb.embed_texts([QUERIES["hi"]])[0])[::-1]
        np.testing.assert_allclose([h["similarity"] for h in r.json()], want, atol=1e-5, rtol=0)
        refused = client.post("/knn-service", json={**body, "indice_name": "en"})
        assert refused.status_code == 422
        detail = refused.json()["detail"]
        assert "use_mclip" in detail and "multilingual" in detail and "'en'" in detail
        plain = client.post("/knn-service", json={**body, "indice_name": "en", "use_mclip": False})
        assert plain.status_code == 200 and len(plain.json()) == 6


def test_models_json_says_which_models_are_multilingual(cli, ml_models, tiny_models, tmp_path):
    out = cli("models", "--json")
    fams = {f["family"]: f for f in out["families"]}
    for name in FAMILIES:
        f = fams[name]
        assert f["multilingual"] is True and f["capabilities"] == ["embed"] and f["dim"]
        assert (f["itm"], f["captions"], f["vqa"]) == (False, False, False) and f["fast_runtimes"]["cpu"]
    for name in ("blip", "blip2", "clip", "align"):
        assert fams[name]["multilingual"] is False
    assert fams["siglip"]["multilingual"] == "some"
    assert fams["siglip"]["multilingual_examples"] == ["google/siglip2-base-patch16-224"]
    assert fams["siglip2"]["multilingual_examples"] == [e["checkpoint"] for e in fams["siglip2"]["examples"]]
    assert fams["clip"]["multilingual_examples"] == []
    assert fams["blip"]["itm"] and fams["blip"]["captions"] and fams["llava"]["vqa"]
    assert "openvino" in fams["blip"]["fast_runtimes"]["cpu"].lower()
    for name in FAMILIES:
        one = cli("models", "--model", str(ml_models[name]), "--json")["checkpoint"]
        assert (one["family"], one["dim"], one["multilingual"]) == (name, 32, True)
    for name in ("blip-itm", "siglip", "clip"):
        assert cli("models", "--model", str(tiny_models[name]), "--json")["checkpoint"]["multilingual"] is False
    # a SigLIP checkpoint with SigLIP 2's 256k Gemma vocabulary (fixed resolution: SiglipModel) is multilingual
    i18n = tmp_path / "siglip-i18n"
    transformers.SiglipConfig(text_config={"vocab_size": 256_000}).save_pretrained(i18n)
    one = cli("models", "--model", str(i18n), "--json")["checkpoint"]
    assert (one["family"], one["multilingual"]) == ("siglip", True)
