"""`eval retrieval` on the files people have: BLIP / LAVIS annotation lists, Karpathy JSON and
JSONL, detected by content; BLIP's caption pre-processing; LAVIS's output keys; exact mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import BlipForImageTextRetrieval, BlipProcessor
from typer.testing import CliRunner

from blipsearch.errors import InvalidInputError
from blipsearch.synthetic import write_images
from cli.main import app
from evaluation.data import detect_format, load_annotations
from evaluation.metrics import rank_from_scores, retrieval_metrics
from evaluation.retrieval import evaluate
from models.text_preprocess import pre_caption
from tests.helpers import make_image, recall_bounds
from tests.test_eval_retrieval import assert_metrics_match

COLORS = ["Red", "GREEN", "blue", "Yellow", "BLACK", "white"]
LAVIS_KEYS = {
    "txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean", "r_mean",
}  # fmt: skip


def _caption(i: int, j: int) -> str:
    """Upper case and BLIP's special characters, as raw COCO / Flickr captions have them."""
    return f'A {COLORS[(i + j) % 6].upper()} Shape; "Number" {i}:  VIEW ({j})!!\n'


@pytest.fixture(scope="module")
def lavis_set(tmp_path_factory):
    """A BLIP / LAVIS-format test file (a JSON list; ``caption`` a list) over 24 images."""
    root = tmp_path_factory.mktemp("lavis")
    paths = write_images(root / "images", 24)
    entries = [
        {"image": f"images/{p.name}", "caption": [_caption(i, j) for j in range(3)], "image_id": i}
        for i, p in enumerate(paths)
    ]
    ann = root / "coco_karpathy_test.json"
    ann.write_text(json.dumps(entries))
    return root, ann


def _transformers_itc(path, images, texts) -> np.ndarray:
    """[images, texts] ITC cosine from transformers' BlipForImageTextRetrieval (use_itm_head=False)."""
    model = BlipForImageTextRetrieval.from_pretrained(path).eval()
    processor = BlipProcessor.from_pretrained(path)
    out = np.zeros((len(images), len(texts)))
    for i, img in enumerate(images):
        inputs = processor(images=img, text=texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out[i] = model(**inputs, use_itm_head=False).itm_score[0].numpy()
    return out


# -- pre_caption ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "max_words", "want"),
    [
        ("A man riding a horse.", 30, "a man riding a horse"),
        ('  Two DOGS!! "playing" (outside) * # : ; ~ ', 30, "two dogs playing outside"),
        ("a cat\n", 30, "a cat"),
        ("a  dog\t\tand   a cat", 30, "a dog and a cat"),
        ("a\tdog", 30, "a\tdog"),  # a single tab is not a run: BLIP keeps it
        ("the dog's ball, red-ish 2.5 kg", 30, "the dog's ball, red-ish 2 5 kg"),  # , ' - kept
        ("one two three four five", 3, "one two three"),
        ("one. two. three. four.", 3, "one two three"),  # punctuation goes before words are counted
        ("one two three", None, "one two three"),
        ("...!!!", 30, ""),
        ("Ünïcode CAFÉ.", 30, "ünïcode café"),
    ],
)
def test_pre_caption_matches_hand_written_cases(raw, max_words, want):
    assert pre_caption(raw, max_words) == want


def test_pre_caption_keeps_thirty_words_by_default():
    words = [f"w{i}" for i in range(40)]
    assert pre_caption(" ".join(words)) == " ".join(words[:30])
    assert pre_caption(pre_caption(" ".join(words))) == pre_caption(" ".join(words))  # idempotent


# -- annotation formats --------------------------------------------------------------------------
def test_formats_are_detected_by_content_not_name(lavis_set, tmp_path):
    root, ann = lavis_set
    entries = json.loads(ann.read_text())
    assert detect_format(ann.read_text()) == "blip"
    # The same data as Karpathy JSON and as JSONL, under misleading names.
    karpathy = {
        "images": [
            {"filepath": "images", "filename": e["image"].split("/")[1], "split": "test",
             "sentences": [{"raw": c} for c in e["caption"]]}
            for e in entries
        ]
    }  # fmt: skip
    files = {
        "karpathy": (tmp_path / "dataset_coco.txt", json.dumps(karpathy)),
        "jsonl": (tmp_path / "ann.json", "".join(json.dumps({"image": e["image"], "captions": e["caption"]}) + "\n"
                                                  for e in entries)),
        "blip": (tmp_path / "flickr30k_test.jsonl", json.dumps(entries)),
    }  # fmt: skip
    want = load_annotations(ann, root)
    assert len(want.images) == 24 and len(want.texts) == 72 and want.texts[0] == entries[0]["caption"][0]
    for kind, (path, text) in files.items():
        path.write_text(text)
        assert detect_format(text) == kind
        got = load_annotations(path, root)
        assert (got.images, got.texts, got.txt_to_img, got.img_to_txts) == (
            want.images, want.texts, want.txt_to_img, want.img_to_txts
        ), kind  # fmt: skip


def test_lavis_single_caption_entries_merge_per_image(lavis_set, tmp_path):
    root, ann = lavis_set
    entries = json.loads(ann.read_text())[:3]
    # Training-style files: one caption a line, image_id optional, the same image repeated.
    flat = [{"image": e["image"], "caption": c} for e in entries for c in e["caption"]]
    flat[1]["image_id"] = 7
    path = tmp_path / "train.json"
    path.write_text(json.dumps(flat))
    data = load_annotations(path, root)
    assert [p.name for p in data.images] == [e["image"].split("/")[1] for e in entries]
    assert data.img_to_txts == [{0, 1, 2}, {3, 4, 5}, {6, 7, 8}]
    assert load_annotations(path, root, limit=2).texts == data.texts[:6]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"caption": ["x"]}]', "'image'"),
        ('[{"image": "images/img_00000.jpg", "caption": 3}]', "captions must be"),
        ('[{"image": "images/img_00000.jpg", "caption": []}]', "captions must be"),
        ("[1, 2]", "'image'"),
        ('{"image": "images/img_00000.jpg"}\n', "captions must be"),
        ("not json at all\n", "not Karpathy JSON, a BLIP/LAVIS annotation list"),
        ('{"images": [{"sentences": []}]}', "not Karpathy JSON"),
        ('[{"image": "images/nope.jpg", "caption": "x"}]', "not found"),
        ("[]", "no images"),
    ],
)
def test_bad_annotation_files_name_the_problem(lavis_set, tmp_path, content, message):
    root, _ = lavis_set
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InvalidInputError, match=message):
        load_annotations(path, root)


# -- the papers' protocol ------------------------------------------------------------------------
def test_lavis_file_itc_equals_transformers_on_pre_captioned_text(lavis_set, tiny_models, blip_embedder):
    """ITC-only TR@1/5/10 and IR@1/5/10 of `evaluate` on a LAVIS file with upper-case,
    punctuated captions equal the brute force over transformers' ITC on the pre_caption-ed
    captions."""
    from PIL import Image

    root, ann = lavis_set
    data = load_annotations(ann, root)
    got = evaluate(blip_embedder, data, k_test=256)
    assert got["mode"] == "exact" and got["jpeg_draft"] is False and got["dtype"] == "float32"
    images = [Image.open(p).convert("RGB") for p in data.images]
    clean = [pre_caption(t, 30) for t in data.texts]
    assert clean[0] == "a red shape number 0 view 0"
    sim = _transformers_itc(tiny_models["blip-itm"], images, clean)
    ref = retrieval_metrics(rank_from_scores(sim), rank_from_scores(sim.T), data.img_to_txts, data.txt_to_img)
    # These data have no float ties at the ground truths: the reference recalls are the same
    # under any tie order, so the comparison below is plain equality.
    for scores, relevant in ((sim, data.img_to_txts), (sim.T, [{i} for i in data.txt_to_img])):
        low, high = recall_bounds(scores, relevant)
        assert low == high, (low, high)
    for key in ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10"):
        assert got["itc"][key] == pytest.approx(ref[key], abs=1e-9), key
    assert_metrics_match(got["itc"], sim, data)
    assert LAVIS_KEYS <= got["itc"].keys()
    # The captions really needed the pre-processing: transformers on the raw ones differs.
    raw = _transformers_itc(tiny_models["blip-itm"], images[:2], data.texts)
    assert np.abs(raw - sim[:2]).max() > 1e-3


def test_search_time_texts_get_pre_caption_unless_none(tiny_models, blip_embedder, blip2_embedder):
    from models import load_embedder, load_itm

    for emb in (blip_embedder, blip2_embedder):
        a, b = emb.embed_texts(['A RED "Square"!', "a red square"])
        np.testing.assert_allclose(a, b, atol=1e-6)
    plain = load_embedder(str(tiny_models["blip-itm"]), device="cpu", text_preprocess="none")
    a, b = plain.embed_texts(['A RED "Square"!', "a red square"])
    assert np.abs(a - b).max() > 1e-3  # the punctuation is tokenized as given
    # ITM texts take the same path.
    tokens = blip_embedder.vision_tokens(blip_embedder.preprocess([make_image(0)]))
    scorer = load_itm(blip_embedder)
    np.testing.assert_allclose(
        scorer.score_image_vs_texts(tokens, ["A Red SQUARE."]), scorer.score_image_vs_texts(tokens, ["a red square"]),
        atol=1e-6,
    )  # fmt: skip
    # The setting reaches the model from the edge; bad values are refused.
    from blipsearch.config import Settings
    from blipsearch.errors import ConfigError
    from service.models import load_model

    assert (
        load_model(Settings(device="cpu", text_preprocess="none"), str(tiny_models["blip-itm"])).text_preprocess
        == "none"
    )
    assert load_model(Settings(device="cpu"), str(tiny_models["blip2-itm"])).text_preprocess == "blip"
    with pytest.raises(ValueError, match="text_preprocess"):
        Settings(text_preprocess="lower")
    with pytest.raises(ConfigError, match="Unknown text pre-processing"):
        load_embedder(str(tiny_models["blip-itm"]), device="cpu", text_preprocess="lower")
    raw_scorer = load_itm(plain)
    shouted = raw_scorer.score_image_vs_texts(tokens, ["A Red SQUARE."])
    assert np.abs(shouted - raw_scorer.score_image_vs_texts(tokens, ["a red square"])).max() > 1e-4


def test_cli_lavis_keys_mode_and_precision(lavis_set, tiny_models, monkeypatch, tmp_path):
    root, ann = lavis_set
    monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
    base = ["eval", "retrieval", "--annotations", str(ann), "--images", str(root), "--limit", "8", "--k-test", "4"]
    res = CliRunner().invoke(app, [*base, "--json"])
    assert res.exit_code == 0, res.stderr
    payload = json.loads(res.stdout)
    assert payload["mode"] == "exact" and payload["dtype"] == "float32" and payload["jpeg_draft"] is False
    assert payload["text_preprocess"] == "blip" and payload["max_words"] == 30 and payload["n_images"] == 8
    for stage in ("itc", "itm"):
        assert LAVIS_KEYS <= payload[stage].keys(), stage
        assert payload[stage]["txt_r1"] == payload[stage]["tr_r1"] and payload[stage]["img_r10"] == payload[stage][
            "ir_r10"
        ]  # fmt: skip
    human = CliRunner().invoke(app, [*base, "--no-itm", "--max-words", "4"])
    assert human.exit_code == 0, human.stderr
    assert "mode exact (float32, full decode)" in human.stdout and "max 4 words" in human.stdout
    fast = CliRunner().invoke(app, [*base, "--no-itm", "--precision", "fast", "--json"])
    assert fast.exit_code == 0 and json.loads(fast.stdout)["mode"] == "fast"  # JPEG draft decoding (the default)
    monkeypatch.setenv("BLIPSEARCH_TEXT_PREPROCESS", "none")
    off = CliRunner().invoke(app, [*base, "--no-itm", "--json"])
    assert off.exit_code == 0 and json.loads(off.stdout)["text_preprocess"] == "none"
    bad = CliRunner().invoke(app, [*base, "--precision", "fastest"])
    assert bad.exit_code == 2 and "--precision" in bad.stderr
