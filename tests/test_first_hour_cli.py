"""A newcomer's first hour on the CLI: the data dir remembers its models, offline fails fast
with the right flag named, empty results say why, output has headers and score kinds, help
text says what is true."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from blipsearch.errors import ConfigError, ModelLoadError
from cli.main import app
from tests.helpers import write_images

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Only the two checkpoints these tests use (the demo's pair)."""
    from make_test_models import make_all

    return make_all(tmp_path_factory.mktemp("models"), only=["blip-itm", "blip-caption"])


def _runner():
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> tuple[str, str]:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (result.stdout, result.stderr)
        return result.stdout, result.stderr

    return run


def _env(mp: pytest.MonkeyPatch, data: Path, models: dict[str, Path]) -> None:
    mp.setenv("BLIPSEARCH_DATA_DIR", str(data))
    mp.setenv("BLIPSEARCH_MODEL", str(models["blip-itm"]))
    mp.delenv("BLIPSEARCH_CAPTION_MODEL", raising=False)
    mp.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def cli(tmp_path, monkeypatch, models):
    """The CLI on a fresh data dir of this test."""
    _env(monkeypatch, tmp_path / "data", models)
    return _runner()


@pytest.fixture(scope="module")
def shared(tmp_path_factory, models):
    """The CLI on one data dir for the module, with a 6-image collection ``shapes`` indexed with
    (short) captions; returns (run, image folder)."""
    root = tmp_path_factory.mktemp("shared")
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, root / "data", models)
        run = _runner()
        write_images(root / "imgs", 6)
        cap = str(models["blip-caption"])
        run("index", str(root / "imgs"), "-c", "shapes", "--captions", "--caption-model", cap, "--max-new-tokens", "6")
        yield run, root / "imgs"


@pytest.fixture
def shapes(shared, monkeypatch, models):
    """The module's ``shapes`` collection, this test's environment pointing at it."""
    _, imgs = shared
    _env(monkeypatch, imgs.parent / "data", models)
    return imgs


# -- the data dir remembers its models ---------------------------------------------------------
def test_settings_precedence_flag_env_file_default(tmp_path, monkeypatch, models):
    from blipsearch.config import DEFAULT_CAPTION_MODEL, get_settings

    data = tmp_path / "d"
    for var in ("BLIPSEARCH_MODEL", "BLIPSEARCH_CAPTION_MODEL", "BLIPSEARCH_BATCH_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(data))
    runner = CliRunner()
    res = runner.invoke(app, ["config", "set", "model", str(models["blip-itm"]), "batch_size", "3"])
    assert res.exit_code == 0, res.stderr
    assert get_settings().model == str(models["blip-itm"]) and get_settings().batch_size == 3  # file
    assert get_settings().caption_model == DEFAULT_CAPTION_MODEL  # default
    monkeypatch.setenv("BLIPSEARCH_BATCH_SIZE", "5")
    assert get_settings().batch_size == 5  # env over file
    assert get_settings(batch_size=7).batch_size == 7  # flag over env
    shown = json.loads(runner.invoke(app, ["config", "show", "--json"]).stdout)
    sources = {r["key"]: r["source"] for r in shown["settings"]}
    assert sources["model"] == "file" and sources["batch_size"] == "env" and sources["caption_model"] == "default"
    # a relative model path in the file is relative to the data dir
    (data / "blipsearch.toml").write_text('model = "./models/x"\n')
    assert get_settings().model == str((data / "models" / "x").resolve())
    (data / "blipsearch.toml").write_text("modle = 1\n")
    with pytest.raises(ConfigError, match="'modle' is not a setting"):
        get_settings()
    bad = runner.invoke(app, ["config", "set", "batch_size", "zero"])
    assert bad.exit_code == 2 and "batch_size" in bad.stderr


def test_a_list_setting_that_is_not_json_is_a_one_line_error(tmp_path, monkeypatch):
    """``BLIPSEARCH_IMPORT_ROOTS=/srv/photos`` (not a JSON list) names the variable and the JSON
    form, exit 2, instead of pydantic-settings' traceback."""
    from blipsearch.config import get_settings

    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("BLIPSEARCH_IMPORT_ROOTS", "/srv/photos")
    with pytest.raises(ConfigError, match=r"BLIPSEARCH_IMPORT_ROOTS: not valid JSON.*\["):
        get_settings()
    res = CliRunner().invoke(app, ["collections"])
    assert res.exit_code == 2 and "BLIPSEARCH_IMPORT_ROOTS" in res.stderr and "Traceback" not in res.output


def test_new_data_dir_remembers_its_models(cli, tmp_path, monkeypatch, models):
    write_images(tmp_path / "imgs", 3)
    cap = str(models["blip-caption"])
    cli("index", str(tmp_path / "imgs"), "-c", "a", "--caption-model", cap)
    saved = (tmp_path / "data" / "blipsearch.toml").read_text()
    assert f'model = "{models["blip-itm"]}"' in saved and f'caption_model = "{models["blip-caption"]}"' in saved
    # a later shell sets only the data dir: index, search and caption all work
    monkeypatch.delenv("BLIPSEARCH_MODEL")
    write_images(tmp_path / "more", 2)
    cli("index", str(tmp_path / "more"), "-c", "b")
    out, _ = cli("search", "a red square", "-c", "b", "-k", "1")
    assert "itc " in out
    out, _ = cli("caption", str(tmp_path / "more" / "img_00000.jpg"), "--json")
    assert json.loads(out)["caption_model"] == str(models["blip-caption"])


# -- offline fails fast, naming the flag of the model's role --------------------------------------
@pytest.mark.parametrize("how", ["offline", "unreachable"])
def test_hub_id_fails_fast_offline(how, tmp_path, monkeypatch, cli):
    from huggingface_hub import constants

    from models import load_embedder
    from models.captioners import load_captioner

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    if how == "unreachable":  # no HF_HUB_OFFLINE; the endpoint refuses connections
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        load_embedder("nobody/not-cached-model", device="cpu")
    assert time.perf_counter() - t0 < 1.5
    msg = str(err.value)
    assert "--model DIR" in msg and "BLIPSEARCH_MODEL=DIR" in msg
    assert ("HF_HUB_OFFLINE" in msg) == (how == "offline") and ("127.0.0.1:9" in msg) == (how == "unreachable")
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        load_captioner("nobody/not-cached-captioner", device="cpu")
    assert time.perf_counter() - t0 < 1.5
    msg = str(err.value)
    assert "--caption-model DIR" in msg and "BLIPSEARCH_CAPTION_MODEL=DIR" in msg and "`--model" not in msg
    # the CLI: one line, exit 5, well under a second once started
    img = tmp_path / "i"
    write_images(img, 1)
    t0 = time.perf_counter()
    _, err_text = cli("caption", str(img / "img_00000.jpg"), "--caption-model", "nobody/x", code=5)
    assert time.perf_counter() - t0 < 1.5
    assert err_text.count("\n") == 1 and "--caption-model DIR" in err_text


# -- empty results say why ------------------------------------------------------------------------
def test_empty_reason_words():
    from search.why_empty import empty_reason

    def ex(plan: dict, ran: dict) -> dict:
        base_plan = {"mode": "vector", "index": {"vectors": 10}, "filters": None, "allowed_records": None}
        base_ran = {"shortlist": 0, "missing": {}}
        return {"plan": {**base_plan, **plan}, "ran": {**base_ran, **ran}}

    assert empty_reason(ex({"index": {"vectors": 0}}, {})) == "the collection is empty"
    where = ex({"filters": {"fields": {"format": "PNG"}, "min_width": 5000}, "allowed_records": 0}, {})
    assert empty_reason(where) == "no record matches --where format=PNG --min-width 5000"
    assert empty_reason(where, style="api") == "no record matches fields.format=PNG, min_width=5000"
    cut = ex({"min_score": 0.9}, {"shortlist": 3, "missing": {"below_min_score": 3}})
    assert empty_reason(cut, best_score=0.41) == "no result clears --min-score 0.9 (best ITC score was 0.41)"
    assert empty_reason(ex({"mode": "keyword"}, {})).startswith("no record's text contains the query's words")
    hidden = ex({}, {"missing": {"hidden_by_moderation": 10}})
    assert empty_reason(hidden) == "every record is hidden by moderation (10 hidden)"


def test_cli_empty_results_give_the_real_reason(shapes):
    cli = _runner()

    def why(*flags: str) -> str:
        out, _ = cli("search", "a red square", "-c", "shapes", *flags)
        assert out.startswith("no results: "), out
        return out.strip().removeprefix("no results: ")

    assert why("--where", "format=PNG") == "no record matches --where format=PNG"
    assert why("--min-width", "5000") == "no record matches --min-width 5000"
    best = json.loads(cli("search", "a red square", "-c", "shapes", "-k", "1", "--json")[0])["results"][0]["score"]
    assert why("--min-score", "0.99").startswith(f"no result clears --min-score 0.99 (best ITC score was {best:.3g})")
    payload = json.loads(cli("search", "a red square", "-c", "shapes", "--where", "format=PNG", "--json")[0])
    assert payload["results"] == [] and payload["empty_reason"] == "no record matches --where format=PNG"
    assert json.loads(cli("search", "red", "-c", "shapes", "--json")[0])["empty_reason"] is None
    # an unknown field is refused, naming the known ones
    _, err = cli("search", "a red square", "-c", "shapes", "--where", "colour=red", code=2)
    assert "Unknown filter field 'colour'" in err and "format" in err and "width" in err


def test_api_search_answers_the_same_reason(shapes):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from blipsearch.config import get_settings

    with TestClient(create_app(get_settings()), raise_server_exceptions=False) as client:
        body = {"collection": "shapes", "query": "a red square", "filters": {"fields": {"format": "PNG"}}}
        res = client.post("/v1/search/text", json=body)
        assert res.status_code == 200 and res.json()["results"] == []
        assert res.json()["empty_reason"] == "no record matches fields.format=PNG"
        assert client.post("/v1/search/text", json={**body, "filters": None}).json()["empty_reason"] is None
        bad = client.post("/v1/search/text", json={**body, "filters": {"fields": {"colour": "red"}}})
        assert bad.status_code == 422 and "colour" in bad.text


# -- output: headers, captions, score kinds, no reprs ------------------------------------------------
def test_rows_have_headers_captions_and_score_kinds(shapes, tmp_path):
    cli = _runner()
    out, _ = cli("collections")
    assert out.splitlines()[0].split() == ["name", "kind", "records", "built", "model"]
    out, _ = cli("search", "a red square", "-c", "shapes", "-k", "2")
    head, *rows = out.splitlines()
    assert head.split() == ["score", "id", "record", "caption"] and len(rows) == 2
    captions = [
        r["caption"]
        for r in json.loads(cli("search", "a red square", "-c", "shapes", "-k", "2", "--json")[0])["results"]
    ]
    assert all(r.startswith("itc ") for r in rows) and all(c and c[:20] in out for c in captions)
    out, _ = cli("search", "a red square", "-c", "shapes", "-k", "2", "--rerank", "--fusion", "itm")
    assert all(r.startswith("itm ") for r in out.splitlines()[1:])
    # missing query image: the path is named
    _, err = cli("search", "--image", str(tmp_path / "nope.jpg"), "-c", "shapes", code=2)
    assert str(tmp_path / "nope.jpg") in err
    # an empty folder
    (tmp_path / "empty").mkdir()
    out, _ = cli("index", str(tmp_path / "empty"), "-c", "shapes")
    assert f"no images found in {tmp_path / 'empty'}" in out


def test_keyword_rows_say_bm25(shapes):
    cli = _runner()
    cap = json.loads(cli("search", "a red square", "-c", "shapes", "-k", "1", "--json")[0])["results"][0]["caption"]
    out, _ = cli("search", cap.split()[0], "-c", "shapes", "--mode", "keyword", "-k", "1")
    assert out.splitlines()[1].startswith("bm25 ")


def _policy(tmp_path: Path) -> Path:
    cats = [{"name": "red", "prompts": ["a red square"], "itc_threshold": 0.5, "itm_threshold": 0.0, "action": "flag"}]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "version": 1, "categories": cats}))
    return path


def test_moderation_scales_and_output(shapes, tmp_path):
    cli = _runner()
    policy = _policy(tmp_path)
    out, _ = cli("moderate", "check", str(shapes / "img_00000.jpg"), "--policy", str(policy), "--json")
    cat = json.loads(out)["results"][0]["categories"][0]
    assert cat["itc"] == pytest.approx((1 + cat["itc_cosine"]) / 2, abs=1e-9)
    assert cat["screened"] == (cat["itc"] >= 0.5)  # the same scale as itc_threshold
    out, _ = cli("moderate", "run", "-c", "shapes", "--policy", str(policy))
    assert "{" not in out and "decisions: " in out
    out, _ = cli("moderate", "results", "-c", "shapes")
    head, *rows = out.splitlines()
    assert head.split()[:4] == ["collection", "id", "decision", "policy"] and len(rows) == 6


# -- help text ------------------------------------------------------------------------------------
def test_help_text(cli):
    out, _ = cli("embed", "--help")
    assert "(n, dim), or (n, 32, dim) for BLIP-2" in " ".join(out.split())
    out, _ = cli("search", "--help")
    flat = " ".join(out.split())
    assert "<bool>" not in out and "-k, --limit, --k" in out and "How many results" in flat
    assert "Only images at least this wide" in flat and "Only images at most this tall" in flat
    for cmd in (["moderate", "check"], ["eval", "retrieval"]):
        out, _ = cli(*cmd, "--help")
        assert "collection's model" not in " ".join(out.split()), cmd
    out, _ = cli("embed", "--help")
    assert "json|npy" in out
    out, _ = cli("moderate", "results", "--help")
    assert "allow|flag|review|block" in out
    out, _ = cli("jobs", "--help")
    assert "moderation" in out


def test_caption_collection_is_a_job(shapes, models):
    cli = _runner()
    cli("caption", "-c", "shapes", "--caption-model", str(models["blip-caption"]), "--max-new-tokens", "6")
    jobs = json.loads(cli("jobs", "list", "--json")[0])["jobs"]
    assert any(j["kind"] == "caption" and j["collection"] == "shapes" for j in jobs)


def test_make_demo_images_help(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_demo_images.py"), "--help"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and "usage:" in proc.stdout and not (tmp_path / "--help").exists()
