"""Visual questions in moderation policies: validation naming the field, scores equal to the
VQA model's first-token probabilities, asked only after the ITC screen, thresholded exactly,
stored and queried with the other checks (batch job, CLI, API)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from models import load_itm
from models.captioners import load_captioner
from models.vqa import VisualQuestionScorer
from moderation.batch import moderate_collection
from moderation.checks import Moderator, screen_score
from moderation.policy import PolicyError, parse_policy
from moderation.store import query_results
from storage.catalog import open_catalog
from storage.collection import Collection
from tests.helpers import make_image, write_images

QUESTIONS = ["is there a gun?", "is there a knife?"]


def vqa_policy(vqa_model: str, itc: float = 0.0, vqa: float = 0.0, itm: float | None = None, **extra) -> dict:
    weapons = {"name": "weapons", "prompts": ["a gun", "a knife"], "itc_threshold": itc, "action": "block",
               "questions": QUESTIONS, "vqa_threshold": vqa}  # fmt: skip
    if itm is not None:
        weapons["itm_threshold"] = itm
    plain = {"name": "red", "prompts": ["a red square"], "itc_threshold": 0.0, "itm_threshold": 1.0, "action": "flag"}
    return {"name": "vqa", "version": 1, "vqa_model": vqa_model, "categories": [weapons, plain], **extra}


@pytest.fixture(scope="module")
def vqa(tiny_generators):
    return VisualQuestionScorer(load_captioner(str(tiny_generators["llava"]), device="cpu", batch_size=2))


@pytest.fixture(scope="module")
def scorer(blip_embedder):
    return load_itm(blip_embedder, batch_size=4)


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda p: p["categories"][0].pop("vqa_threshold"), "categories[0].vqa_threshold", "required"),
        (lambda p: p["categories"][0].update(vqa_threshold=1.5), "categories[0].vqa_threshold", "within [0, 1]"),
        (lambda p: p["categories"][0].update(questions=[" "]), "categories[0].questions", "blank"),
        (lambda p: p["categories"][0].pop("questions"), "categories[0].questions", "required"),
        (lambda p: p.pop("vqa_model"), "vqa_model", "required when a category has questions"),
        (lambda p: p["categories"][1].update(questions=["q?"]), "categories[1].vqa_threshold", "required"),
        (lambda p: p["categories"][1].pop("itm_threshold"), "categories[1].itm_threshold", "required"),
        (lambda p: p["categories"][0].update(vqa_answer="yes"), "categories[0].vqa_answer", "unknown key"),
    ],
)
def test_vqa_policy_errors_name_the_field(mutate, field, message):
    data = vqa_policy("m")
    mutate(data)
    with pytest.raises(PolicyError) as err:
        parse_policy(data)
    assert f"{field}: " in str(err.value) and message in str(err.value), str(err.value)


def test_vqa_model_without_questions_is_refused():
    data = vqa_policy("m")
    data["categories"] = data["categories"][1:]
    with pytest.raises(PolicyError, match="vqa_model: no category has questions"):
        parse_policy(data)


def test_vqa_scores_screen_and_thresholds(blip_embedder, scorer, vqa):
    images = [make_image(i) for i in range(3)]
    mod = Moderator(parse_policy(vqa_policy(vqa.model_id)), blip_embedder, scorer, vqa=vqa)
    assert mod.model_ids == {"itc": blip_embedder.model_id, "itm": blip_embedder.model_id, "vqa": vqa.model_id}
    results = mod.check_images(images)
    direct = vqa.score_images(images, QUESTIONS)  # [image, question]
    for res, row in zip(results, direct, strict=True):
        weapons = res.categories[0]
        assert weapons.screened and weapons.itm is None  # no itm_threshold: ITM not asked
        assert weapons.vqa == pytest.approx(float(row.max()), abs=1e-6)
        assert weapons.vqa_question == QUESTIONS[int(row.argmax())]
        assert res.categories[1].vqa is None  # a category without questions
        (trigger,) = [t for t in res.triggers if t["check"] == "vqa"]  # vqa_threshold 0: a hit
        assert trigger == {
            "check": "vqa", "category": "weapons", "question": weapons.vqa_question, "score": weapons.vqa,
            "threshold": 0.0, "action": "block", "model": vqa.model_id,
        }  # fmt: skip
        assert res.decision == "block" and "vqa" in res.timing_ms
    # Exact threshold: equal is a hit, the next float above is not.
    one = mod.check_images(images[:1])[0].categories[0].vqa  # the same input (batch of one) as the runs below
    hit = Moderator(parse_policy(vqa_policy(vqa.model_id, vqa=one)), blip_embedder, scorer, vqa=vqa)
    above = float(np.nextafter(one, 2.0))
    miss = Moderator(parse_policy(vqa_policy(vqa.model_id, vqa=above)), blip_embedder, scorer, vqa=vqa)
    assert hit.check_images(images[:1])[0].decision == "block"
    missed = miss.check_images(images[:1])[0]
    assert missed.decision == "allow" and missed.categories[0].vqa == one and not missed.categories[0].hit
    # Only images passing the ITC screen are asked.
    itc = results[0].categories[0].itc
    strict = vqa_policy(vqa.model_id, itc=min(1.0, float(screen_score(itc)) + 1e-4))
    out = Moderator(parse_policy(strict), blip_embedder, scorer, vqa=vqa).check_images(images[:1])[0]
    assert not out.categories[0].screened and out.categories[0].vqa is None and out.decision == "allow"
    assert "vqa" not in out.timing_ms
    # Calibration mode (screen=False) asks every category.
    calib = Moderator(parse_policy(strict), blip_embedder, scorer, vqa=vqa).check_images(images[:1], screen=False)[0]
    assert calib.categories[0].vqa == pytest.approx(one, abs=1e-6) and not calib.categories[0].hit


def test_vqa_and_itm_both_confirm(blip_embedder, scorer, vqa):
    """With both, either hit is a hit: ITM at 0 hits even when VQA at 1 does not."""
    pol = parse_policy(vqa_policy(vqa.model_id, itm=0.0, vqa=1.0))
    res = Moderator(pol, blip_embedder, scorer, vqa=vqa).check_images([make_image(0)])[0]
    weapons = res.categories[0]
    assert weapons.itm is not None and weapons.vqa is not None and weapons.hit
    assert [t["check"] for t in res.triggers if t.get("category") == "weapons"] == ["policy"]


def test_questions_need_a_vqa_model(blip_embedder, scorer):
    with pytest.raises(PolicyError, match="no vqa_model was loaded"):
        Moderator(parse_policy(vqa_policy("m")), blip_embedder, scorer)


def test_vqa_results_stored_and_served(settings, tiny_models, tiny_generators, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from api.app import create_app
    from cli.main import app as cli
    from service.moderation import build_moderator

    settings.model = str(tiny_models["blip-itm"])
    settings.policy_dir = tmp_path / "policies"
    settings.policy_dir.mkdir()
    llava = str(tiny_generators["llava"])
    (settings.policy_dir / "weapons.yaml").write_text(yaml.safe_dump(vqa_policy(llava)))
    write_images(tmp_path / "imgs", 3)
    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("BLIPSEARCH_MODEL", settings.model)
    runner = CliRunner()
    assert runner.invoke(cli, ["index", str(tmp_path / "imgs"), "-c", "c"]).exit_code == 0

    checked = runner.invoke(cli, ["moderate", "check", str(tmp_path / "imgs" / "img_00001.jpg"), "--policy",
                                  str(settings.policy_dir / "weapons.yaml"), "--json"])  # fmt: skip
    assert checked.exit_code == 0, checked.stderr
    out = json.loads(checked.stdout)
    assert out["models"]["vqa"] == str(tiny_generators["llava"].resolve())
    assert set(out["vqa_token_ids"]) == {"yes", "no"} and out["results"][0]["decision"] == "block"
    human = runner.invoke(cli, ["moderate", "check", str(tmp_path / "imgs" / "img_00001.jpg"), "--policy",
                                str(settings.policy_dir / "weapons.yaml")])  # fmt: skip
    assert "vqa: weapons" in human.stdout

    mod = build_moderator(settings, parse_policy(vqa_policy(llava)))
    catalog = open_catalog(settings.catalog_url())
    run = moderate_collection(settings, catalog, Collection.open(settings.data_dir, "c"), mod, progress=False)
    assert run["checked"] == 3 and run["decisions"] == {"block": 3}
    rows = query_results(catalog, "c")
    assert len(rows) == 3
    for r in rows:
        (trigger,) = [t for t in r["triggers"] if t["check"] == "vqa"]
        assert trigger["model"] == mod.vqa.model_id and trigger["question"] in QUESTIONS
        assert r["scores"][0]["vqa"] == trigger["score"] and r["scores"][0]["vqa_question"] == trigger["question"]

    buf = io.BytesIO()
    make_image(1).save(buf, "PNG")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post("/v1/moderation/check", files={"file": ("a.png", buf.getvalue(), "image/png")},
                        data={"policy": "weapons"})  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["models"]["vqa"] == Path(mod.vqa.model_id).name and body["decision"] == "block"
        assert body["categories"][0]["vqa"] == pytest.approx(
            float(mod.vqa.score_images([make_image(1)], QUESTIONS).max()), abs=1e-6
        )
        stored = client.get("/v1/moderation/results", params={"collection": "c"}).json()["results"]
        assert len(stored) == 3 and all(any(t["check"] == "vqa" for t in s["triggers"]) for s in stored)
