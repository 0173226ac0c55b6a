"""`eval retrieval` end to end on a generated 50 × 5 dataset, against brute-force numpy metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from blipsearch.synthetic import write_images
from cli.main import app
from evaluation.data import load_annotations
from evaluation.metrics import mrr, rank_from_scores, retrieval_metrics
from evaluation.retrieval import evaluate
from models import load_itm
from tests.helpers import rank_bounds, recall_bounds

COLORS = ["red", "green", "blue", "yellow", "black"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    paths = write_images(root / "images", 50)
    lines = [
        {"image": p.name, "captions": [f"a {COLORS[(i + j) % 5]} shape number {i} view {j}" for j in range(5)]}
        for i, p in enumerate(paths)
    ]
    ann = root / "ann.jsonl"
    ann.write_text("".join(json.dumps(x) + "\n" for x in lines))
    karpathy = root / "karpathy.json"
    karpathy.write_text(
        json.dumps(
            {
                "images": [
                    {
                        "filename": x["image"],
                        "split": "test" if i < 40 else "val",
                        "sentences": [{"raw": c} for c in x["captions"]],
                    }
                    for i, x in enumerate(lines)
                ]
            }
        )
    )
    return root, ann, karpathy


def _similarity(embedder, data):
    from PIL import Image

    img = embedder.embed_images([Image.open(p).convert("RGB") for p in data.images])
    txt = embedder.embed_texts(data.texts)
    return np.einsum("nvd,td->ntv", img.reshape(len(img), -1, img.shape[-1]), txt).max(axis=2)  # max over queries


def assert_metrics_match(got: dict, sim: np.ndarray, data) -> None:
    """``got`` equals the brute-force metrics of ``sim`` [images, texts], up to float ties: each
    recall lies within the bounds any tie order gives (tests/helpers.py), and equals the brute
    force's wherever those bounds agree; the MRRs lie within theirs; the means follow."""
    ref = retrieval_metrics(rank_from_scores(sim), rank_from_scores(sim.T), data.img_to_txts, data.txt_to_img)
    assert got.keys() == ref.keys()
    for prefix, scores, relevant in (
        ("tr", sim, data.img_to_txts),
        ("ir", sim.T, [{i} for i in data.txt_to_img]),
    ):
        low, high = recall_bounds(scores, relevant)
        for k in (1, 5, 10):
            key = f"{prefix}_r{k}"
            assert low[k] - 1e-9 <= got[key] <= high[k] + 1e-9, (key, low[k], got[key], high[k])
            if low[k] == high[k]:
                assert got[key] == pytest.approx(ref[key], abs=1e-9), key
        lo_rank, hi_rank = rank_bounds(scores, relevant)
        assert mrr(hi_rank) - 1e-9 <= got[f"{prefix}_mrr"] <= mrr(lo_rank) + 1e-9
        assert got[f"{prefix}_mean"] == pytest.approx(np.mean([got[f"{prefix}_r{k}"] for k in (1, 5, 10)]))
    assert got["r_mean"] == pytest.approx((got["tr_mean"] + got["ir_mean"]) / 2)
    for k in (1, 5, 10):  # LAVIS's names for the same numbers
        assert got[f"txt_r{k}"] == got[f"tr_r{k}"] and got[f"img_r{k}"] == got[f"ir_r{k}"]
    assert got["txt_r_mean"] == got["tr_mean"] and got["img_r_mean"] == got["ir_mean"]


@pytest.mark.parametrize("fixture", ["blip_embedder", "blip2_embedder"])
def test_itc_metrics_equal_brute_force(request, fixture, dataset):
    embedder = request.getfixturevalue(fixture)
    root, ann, _ = dataset
    data = load_annotations(ann, root / "images", split=None)
    assert len(data.images) == 50 and len(data.texts) == 250
    got = evaluate(embedder, data, k_test=256)
    assert got["mode"] == "exact" and got["text_preprocess"] == "blip" and got["max_words"] == 30
    assert_metrics_match(got["itc"], _similarity(embedder, data), data)
    assert {"embed_images", "embed_texts", "build_index", "itc_search_tr", "itc_search_ir"} <= got["timing_s"].keys()


def test_itm_rerank_changes_only_the_top_k_test(blip_embedder, dataset):
    root, ann, _ = dataset
    data = load_annotations(ann, root / "images", split=None, limit=20)
    scorer = load_itm(blip_embedder)
    res = evaluate(blip_embedder, data, scorer=scorer, k_test=8)
    assert set(res["itm"]) == set(res["itc"])
    assert all(0 <= v <= 100 for k, v in res["itm"].items() if "_r" in k)
    assert "itm_rerank_tr" in res["timing_s"] and "itm_rerank_ir" in res["timing_s"]


def test_karpathy_split_and_cli(dataset, tiny_models, monkeypatch, tmp_path):
    root, _, karpathy = dataset
    assert len(load_annotations(karpathy, root / "images", split="test").images) == 40
    monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "retrieval",
            "--annotations",
            str(karpathy),
            "--images",
            str(root / "images"),
            "--k-test",
            "4",
            "--json",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["n_images"] == 40 and payload["k_test"] == 4 and payload["index_spec"] == "Flat"
    assert {"tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "r_mean", "tr_mrr", "ir_mrr"} <= payload[
        "itc"
    ].keys()
    assert "itm" in payload and json.loads(out.read_text()) == payload
    bad = CliRunner().invoke(
        app, ["eval", "retrieval", "--annotations", str(tmp_path / "none.json"), "--images", str(root)]
    )
    assert bad.exit_code == 2 and "Cannot read annotations" in bad.stderr
