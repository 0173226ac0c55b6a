"""Embedding families: CLIP, SigLIP and ALIGN against transformers' own features, end
to end through the CLI, ``models --json``, and cross-family ITM re-ranking with a BLIP head."""

from __future__ import annotations

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
from tests.helpers import make_image, write_images

FAMILIES = {"clip": "CLIPModel", "siglip": "SiglipModel", "align": "AlignModel"}
TEXT_PADDING = {"clip": True, "siglip": "max_length", "align": "max_length"}  # SigLIP / ALIGN: as their docs say
TEXTS = ["a red square on a white background", "two dogs running on the beach at sunset", "cat", "a blue circle"]


@pytest.fixture(scope="module")
def family_embedders(tiny_models):
    return {f: load_embedder(str(tiny_models[f]), device="cpu", batch_size=4) for f in FAMILIES}


def _reference(path, family, images, texts):
    """transformers' own L2-normalised get_image_features / get_text_features."""
    model = getattr(transformers, FAMILIES[family]).from_pretrained(path).eval()
    proc = transformers.AutoProcessor.from_pretrained(path)
    with torch.no_grad():
        img = model.get_image_features(**proc(images=images, return_tensors="pt")).pooler_output
        txt = model.get_text_features(**proc(text=texts, padding=TEXT_PADDING[family], return_tensors="pt"))
    return F.normalize(img, dim=-1).numpy(), F.normalize(txt.pooler_output, dim=-1).numpy()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_embeddings_equal_transformers_features(tiny_models, family_embedders, family):
    emb = family_embedders[family]
    assert emb.family == family and not emb.has_itm
    images = [make_image(i) for i in range(5)]
    ours_img, ours_txt = emb.embed_images(images), emb.embed_texts(TEXTS)
    ref_img, ref_txt = _reference(tiny_models[family], family, images, TEXTS)
    assert ours_img.shape == (5, emb.dim) and ours_txt.shape == (4, emb.dim) and ours_img.dtype == np.float32
    np.testing.assert_allclose(ours_img, ref_img, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours_txt, ref_txt, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ours_img, axis=1), 1, atol=1e-5)
    sims = ours_img @ ours_txt.T
    assert np.ptp(sims[:, 0]) > 1e-3 and np.ptp(sims[0]) > 1e-3  # images and texts are told apart


def test_siglip_pads_text_to_max_length(family_embedders):
    enc = family_embedders["siglip"].tokenize(["cat", "two dogs running on the beach"])
    assert enc["input_ids"].shape[1] == family_embedders["siglip"].processor.tokenizer.model_max_length


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


def _assert_same_ranking(uris, scores, ref_uris, ref_scores):
    """Same images in the same order, scores within 1e-4; a swap only between float ties."""
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4, rtol=0)
    assert sorted(uris) == sorted(ref_uris) or abs(ref_scores[-1] - scores[-1]) < 1e-5
    for i, (u, r) in enumerate(zip(uris, ref_uris, strict=True)):
        if u != r:  # only a tie (within float noise) may swap places
            j = ref_uris.index(u)
            assert abs(ref_scores[i] - ref_scores[j]) < 1e-5, (i, u, r)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_cli_index_and_search_equal_brute_force(cli, tiny_models, tmp_path, family):
    paths = write_images(tmp_path / "imgs", 30)
    out = cli("index", str(tmp_path / "imgs"), "-c", "c", "--model", str(tiny_models[family]), "--json")
    assert out["added"] == 30
    query = "a red square on a white background"
    res = cli("search", query, "-c", "c", "-k", "8", "--json")
    uris = [r["uri"] for r in res["results"]]
    scores = [r["score"] for r in res["results"]]
    images = [Image.open(p).convert("RGB") for p in paths]
    ref_img, ref_txt = _reference(tiny_models[family], family, images, [query])
    sims = (ref_img.astype(np.float64) @ ref_txt[0].astype(np.float64)).ravel()
    order = np.argsort(-sims, kind="stable")[:8]
    _assert_same_ranking(uris, scores, [str(paths[i].resolve()) for i in order], sims[order].tolist())
    assert all(r["itm_score"] is None for r in res["results"])
    listed = cli("collections", "--json")["collections"]
    assert listed[0]["model_id"] == str(tiny_models[family].resolve()) and listed[0]["dim"] == 32


def test_models_json_lists_families_capabilities_and_dims(cli, tiny_models):
    out = cli("models", "--json")
    fams = {f["family"]: f for f in out["families"]}
    assert {"blip", "blip2", "clip", "siglip", "align"} <= fams.keys()
    assert set(out["capabilities"]) == {"embed", "itm", "caption", "vqa"}
    for name in ("clip", "siglip", "align"):
        assert fams[name]["capabilities"] == ["embed"]
    assert "itm" in fams["blip"]["capabilities"] and "itm" in fams["blip2"]["capabilities"]
    assert (fams["clip"]["dim"], fams["siglip"]["dim"], fams["align"]["dim"], fams["blip"]["dim"]) == (
        512,
        768,
        640,
        256,
    )
    assert {"checkpoint": "openai/clip-vit-large-patch14", "dim": 768} in fams["clip"]["examples"]
    one = cli("models", "--model", str(tiny_models["siglip"]), "--json")["checkpoint"]
    assert (one["family"], one["dim"], one["capabilities"]) == ("siglip", 32, ["embed"])
    blip2 = cli("models", "--model", str(tiny_models["blip2-itm"]), "--json")["checkpoint"]
    assert (blip2["family"], blip2["dim"], blip2["vectors_per_image"]) == ("blip2", 256, 32)


def _blip_itm_prob(path, images, text, first_token_id):
    """transformers' BLIP ITM match probability, with the same first-token convention as blipsearch."""
    model = transformers.BlipForImageTextRetrieval.from_pretrained(path).eval()
    proc = transformers.BlipProcessor.from_pretrained(path)
    out = []
    for img in images:
        inputs = proc(images=img, text=text, return_tensors="pt")
        if first_token_id is not None:
            inputs["input_ids"][:, 0] = first_token_id
        with torch.no_grad():
            out.append(torch.softmax(model(**inputs, use_itm_head=True).itm_score, dim=1)[0, 1].item())
    return np.array(out)


def test_rerank_model_over_clip_collection_equals_blip_itm(cli, tiny_models, tmp_path):
    write_images(tmp_path / "imgs", 12)
    cli("index", str(tmp_path / "imgs"), "-c", "c", "--model", str(tiny_models["clip"]), "--json")
    err = cli("search", "a red square", "-c", "c", "--rerank", code=2)["stderr"]
    assert "ITM" in err and "--rerank-model" in err
    blip = str(tiny_models["blip-itm"])
    res = cli(
        "search", "a red square", "-c", "c", "--rerank", "--rerank-model", blip, "-k", "8", "--rerank-k", "8", "--json"
    )
    assert res["rerank_model"] == str(tiny_models["blip-itm"].resolve())
    hits = res["results"]
    assert len(hits) == 8
    enc = transformers.BlipProcessor.from_pretrained(blip).tokenizer.convert_tokens_to_ids("[ENC]")
    ref = _blip_itm_prob(blip, [Image.open(h["uri"]).convert("RGB") for h in hits], "a red square", enc)
    np.testing.assert_allclose([h["itm_score"] for h in hits], ref, atol=1e-5, rtol=0)
    assert np.ptp(ref) > 1e-5  # the head tells the candidates apart
    # the ITC scores are still the CLIP cosines, and the fused score is logit(itm) + itc
    plain = {r["id"]: r["score"] for r in cli("search", "a red square", "-c", "c", "-k", "12", "--json")["results"]}
    np.testing.assert_allclose([h["itc_score"] for h in hits], [plain[h["id"]] for h in hits], atol=1e-5)
    bad = cli("search", "x", "-c", "c", "--rerank", "--rerank-model", str(tiny_models["siglip"]), code=2)["stderr"]
    assert "not an ITM checkpoint" in bad
    assert "add --rerank" in cli("search", "x", "-c", "c", "--rerank-model", blip, code=2)["stderr"]


@pytest.mark.slow
def test_rerank_model_on_blip2_collection_and_image_to_text(cli, tiny_models, tmp_path):
    """A BLIP ITM head over a BLIP-2 collection's shortlist, and over a CLIP text collection (image→text)."""
    write_images(tmp_path / "imgs", 6)
    blip = str(tiny_models["blip-itm"])
    cli("index", str(tmp_path / "imgs"), "-c", "b2", "--model", str(tiny_models["blip2-itm"]), "--json")
    res = cli("search", "a red square", "-c", "b2", "--rerank", "--rerank-model", blip, "-k", "3", "--json")
    assert res["rerank_model"] == str(tiny_models["blip-itm"].resolve()) and len(res["results"]) == 3
    texts = tmp_path / "t.csv"
    texts.write_text("id,text\n" + "".join(f"t{i},{t}\n" for i, t in enumerate(TEXTS)))
    out = cli("index-texts", str(texts), "-c", "txt", "--model", str(tiny_models["clip"]), "--json")
    assert out["added"] == len(TEXTS)
    img = tmp_path / "imgs" / "img_00002.jpg"
    plain = cli("search", "--image", str(img), "-c", "txt", "-k", "4", "--json")["results"]
    clip_emb = load_embedder(str(tiny_models["clip"]), device="cpu")
    q = clip_emb.embed_images([Image.open(img).convert("RGB")])[0]
    ref = clip_emb.embed_texts(TEXTS) @ q
    np.testing.assert_allclose(sorted((r["score"] for r in plain), reverse=True), np.sort(ref)[::-1], atol=1e-5)
    rr = cli("search", "--image", str(img), "-c", "txt", "-k", "4", "--rerank", "--rerank-model", blip, "--json")
    enc = transformers.BlipProcessor.from_pretrained(blip).tokenizer.convert_tokens_to_ids("[ENC]")
    for r in rr["results"]:
        expect = _blip_itm_prob(blip, [Image.open(img).convert("RGB")], r["text"], enc)[0]
        assert abs(r["itm_score"] - expect) < 1e-5


def test_clip_collection_filters_hybrid_and_cache_refusal(cli, tiny_models, tmp_path):
    write_images(tmp_path / "imgs" / "a", 5)
    write_images(tmp_path / "imgs" / "b", 5, start=5)
    clip = str(tiny_models["clip"])
    cli("index", str(tmp_path / "imgs"), "-c", "c", "--model", clip, "--json")
    prefix = str((tmp_path / "imgs" / "b").resolve())
    res = cli("search", "a red square", "-c", "c", "-k", "10", "--uri-prefix", prefix, "--json")["results"]
    assert len(res) == 5 and all(r["uri"].startswith(prefix) for r in res)
    hybrid = cli("search", "a red square", "-c", "c", "-k", "5", "--mode", "hybrid", "--json")
    assert hybrid["mode"] == "hybrid" and len(hybrid["results"]) == 5
    err = cli("index", str(tmp_path / "imgs"), "-c", "d", "--model", clip, "--cache-itm-features", code=2)["stderr"]
    assert "no ITM head" in err


@pytest.mark.slow
def test_reembed_blip_to_clip_and_back(cli, tiny_models, tmp_path):
    write_images(tmp_path / "imgs", 8)
    cli("index", str(tmp_path / "imgs"), "-c", "r", "--cache-itm-features", "--json")  # BLIP, with ITM tokens
    before = cli("search", "a red square", "-c", "r", "-k", "8", "--json")["results"]
    cli("reembed", "-c", "r", "--model", str(tiny_models["clip"]), "--json")
    info = cli("collections", "--json")["collections"][0]
    assert info["model_id"] == str(tiny_models["clip"].resolve()) and not info["itm_features"]
    clip_emb = load_embedder(str(tiny_models["clip"]), device="cpu")
    res = cli("search", "a red square", "-c", "r", "-k", "8", "--json")["results"]
    assert {r["id"] for r in res} == {r["id"] for r in before}  # same records, ids kept
    q = clip_emb.embed_texts(["a red square"])[0]
    for r in res:
        ref = float(clip_emb.embed_images([Image.open(r["uri"]).convert("RGB")])[0] @ q)
        assert abs(r["score"] - ref) < 1e-5
    cli("reembed", "-c", "r", "--model", str(tiny_models["blip-itm"]), "--json")
    back = cli("search", "a red square", "-c", "r", "-k", "8", "--json")["results"]
    np.testing.assert_allclose([r["score"] for r in back], [r["score"] for r in before], atol=1e-5)
    assert cli("search", "a red square", "-c", "r", "-k", "2", "--rerank", "--json")["results"][0]["itm_score"]


def test_api_rerank_model_allowed_list_and_no_itm(tiny_models, settings, tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from service.indexing import index_paths

    write_images(tmp_path / "imgs", 6)
    clip = load_embedder(str(tiny_models["clip"]), device="cpu")
    index_paths(settings, [tmp_path / "imgs"], "c", embedder=clip, progress=False)
    blip = str(tiny_models["blip-itm"].resolve())
    s = settings.model_copy(
        update={"model": str(tiny_models["blip2-itm"].resolve()), "allowed_models": [blip], "expose_paths": True}
    )
    with TestClient(create_app(s)) as client:
        body = {"query": "a red square", "collection": "c", "k": 3}
        assert client.post("/v1/search/text", json=body).status_code == 200
        no_itm = client.post("/v1/search/text", json={**body, "rerank": True})
        assert no_itm.status_code == 422 and "rerank_model" in no_itm.json()["detail"]
        ok = client.post("/v1/search/text", json={**body, "rerank": True, "rerank_model": blip})
        assert ok.status_code == 200, ok.text
        hits = ok.json()["results"]
        enc = transformers.BlipProcessor.from_pretrained(blip).tokenizer.convert_tokens_to_ids("[ENC]")
        ref = _blip_itm_prob(blip, [Image.open(h["uri"]).convert("RGB") for h in hits], "a red square", enc)
        np.testing.assert_allclose([h["itm_score"] for h in hits], ref, atol=1e-5)
        denied = client.post("/v1/search/text", json={**body, "rerank": True, "rerank_model": str(tmp_path)})
        assert denied.status_code == 422 and "not allowed" in denied.json()["detail"]
        with open(tmp_path / "imgs" / "img_00001.jpg", "rb") as fh:
            img = client.post(
                "/v1/search/image",
                files={"file": ("q.jpg", fh, "image/jpeg")},
                data={"collection": "c", "k": "2", "rerank": "true", "rerank_model": blip},
            )
        # image→image has no ITM (it scores an image against a text): refused, never silently ITC
        assert img.status_code == 422 and "image → image" in img.json()["detail"]


def test_moderation_on_clip_is_itc_only_unless_itm_model(tiny_models, settings):
    from blipsearch.errors import NoItmModelError
    from moderation.checks import screen_score
    from moderation.policy import parse_policy
    from service.moderation import build_moderator

    clip = load_embedder(str(tiny_models["clip"]), device="cpu")
    raw = {
        "name": "p",
        "version": "1",
        "categories": [
            {"name": "all", "prompts": ["a red square", "cat"], "itc_threshold": 0.0, "itm_threshold": 1.0,
             "action": "flag"},
            {"name": "none", "prompts": ["a dog"], "itc_threshold": 1.0, "itm_threshold": 0.0, "action": "block"},
        ],
    }  # fmt: skip
    images = [make_image(i) for i in range(3)]
    itc_only = build_moderator(settings, parse_policy(raw), embedder=clip)
    assert itc_only.model_ids == {"itc": clip.model_id, "itm": None}
    results = itc_only.check_images(images)
    prompt_emb = clip.embed_texts(["a red square", "cat"])
    for img, res in zip(images, results, strict=True):
        cos = (clip.embed_images([img]) @ prompt_emb.T).max()
        assert abs(res.categories[0].itc - cos) < 1e-5 and res.categories[0].itm is None
        assert res.decision == "flag" and res.triggers[0]["stage"] == "itc"
        assert abs(res.triggers[0]["score"] - screen_score(cos)) < 1e-6
        assert not res.categories[1].screened and not res.categories[1].hit
    with pytest.raises(NoItmModelError):
        itc_only.check_images(images[:1], ["a caption"])  # consistency needs ITM
    with_itm = build_moderator(
        settings, parse_policy({**raw, "itm_model": str(tiny_models["blip-itm"])}), embedder=clip
    )
    res = with_itm.check_images(images[:1])[0]
    enc = transformers.BlipProcessor.from_pretrained(tiny_models["blip-itm"]).tokenizer.convert_tokens_to_ids("[ENC]")
    ref = max(_blip_itm_prob(tiny_models["blip-itm"], images[:1], p, enc)[0] for p in ["a red square", "cat"])
    assert abs(res.categories[0].itm - ref) < 1e-5 and res.decision == "allow"  # itm_threshold 1.0: not hit
    assert with_itm.model_ids["itm"] == str(tiny_models["blip-itm"].resolve())


def test_eval_retrieval_itc_stage_on_clip(tiny_models, tmp_path, monkeypatch):
    from evaluation.data import load_annotations
    from evaluation.metrics import rank_from_scores, retrieval_metrics

    paths = write_images(tmp_path / "images", 10)
    lines = [{"image": p.name, "captions": [f"shape number {i}", f"view {i}"]} for i, p in enumerate(paths)]
    ann = tmp_path / "ann.jsonl"
    ann.write_text("".join(json.dumps(x) + "\n" for x in lines))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["eval", "retrieval", "--annotations", str(ann), "--images", str(tmp_path / "images"), "--split", ""]
    result = CliRunner().invoke(app, [*args, "--model", str(tiny_models["clip"]), "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    data = load_annotations(ann, tmp_path / "images", None, None)
    clip = load_embedder(str(tiny_models["clip"]), device="cpu")
    sim = clip.embed_images([Image.open(p).convert("RGB") for p in data.images]) @ clip.embed_texts(data.texts).T
    ref = retrieval_metrics(rank_from_scores(sim), rank_from_scores(sim.T), data.img_to_txts, data.txt_to_img)
    for key in ("tr_r1", "ir_r1", "ir_r5"):
        assert abs(payload["itc"][key] - ref[key]) < 1e-9
    assert payload.get("itm") is None
