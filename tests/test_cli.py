"""The CLI contract: commands, flags, JSON fields and exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import write_bad_files, write_images


@pytest.fixture
def cli(tmp_path, monkeypatch, tiny_models):
    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BLIPSEARCH_JPEG_DRAFT", "0")  # exact comparisons below; draft: test_decode_draft.py
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> dict:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (result.stdout, result.stderr)
        return json.loads(result.stdout) if "--json" in args and result.stdout.strip() else {}

    return run


def test_index_search_collections_reindex(cli, tmp_path):
    write_images(tmp_path / "imgs", 10)
    write_bad_files(tmp_path / "imgs" / "bad")
    out = cli("index", str(tmp_path / "imgs"), "--collection", "photos", "--batch-size", "4", "--json")
    assert {"collection", "added", "skipped_duplicates", "failed", "failures", "total"} <= out.keys()
    assert (out["collection"], out["added"], out["skipped_duplicates"], out["failed"]) == ("photos", 10, 0, 5)
    assert out["total"] == 15 and all({"path", "error"} <= f.keys() for f in out["failures"])

    again = cli("index", str(tmp_path / "imgs"), "--collection", "photos", "--json")
    assert (again["added"], again["skipped_duplicates"]) == (0, 10)

    res = cli("search", "a red square", "--collection", "photos", "-k", "3", "--json")
    assert len(res["results"]) == 3
    assert all({"id", "uri", "score", "caption"} <= r.keys() for r in res["results"])
    scores = [r["score"] for r in res["results"]]
    assert scores == sorted(scores, reverse=True)

    img = tmp_path / "imgs" / "img_00004.jpg"
    res = cli("search", "--image", str(img), "--collection", "photos", "-k", "2", "--json")
    assert res["results"][0]["uri"] == str(img.resolve())

    cols = cli("collections", "--json")
    assert [(c["name"], c["count"]) for c in cols["collections"]] == [("photos", 10)]

    rebuilt = cli("reindex", "--collection", "photos", "--json")
    assert rebuilt["index"]["ntotal"] == 10


def test_errors_are_clear(cli, tmp_path):
    out = cli("search", "x", "--collection", "nope", "--json", code=3)
    assert out["error"]["code"] == "collection_not_found"
    cli("search", "--collection", "nope", code=2)  # neither text nor --image
    cli("index", str(tmp_path / "missing"), "--collection", "c", code=2)
    cli("index", str(tmp_path), "--collection", "../escape", code=2)


def test_rerank_and_text_collections(cli, tmp_path):
    write_images(tmp_path / "imgs", 8)
    cli("index", str(tmp_path / "imgs"), "-c", "photos", "--cache-itm-features", "--json")
    res = cli("search", "a red square", "-c", "photos", "-k", "3", "--rerank", "--rerank-k", "8", "--json")
    assert res["rerank"] is True and res["fusion"] == "itm+itc"
    for r in res["results"]:
        assert {"id", "uri", "score", "caption", "itc_score", "itm_score"} <= r.keys()
        assert 0 <= r["itm_score"] <= 1
    assert [r["score"] for r in res["results"]] == sorted((r["score"] for r in res["results"]), reverse=True)
    plain = cli("search", "a red square", "-c", "photos", "-k", "3", "--json")
    assert all(r["itm_score"] is None and r["itc_score"] == r["score"] for r in plain["results"])

    texts = tmp_path / "t.jsonl"
    texts.write_text("".join(json.dumps({"id": i, "text": f"caption number {i}", "src": "x"}) + "\n" for i in range(6)))
    out = cli("index-texts", str(texts), "-c", "caps", "--json")
    assert out["added"] == 6
    img = tmp_path / "imgs" / "img_00001.jpg"
    res = cli("search", "--image", str(img), "-c", "caps", "-k", "2", "--rerank", "--fusion", "itm", "--json")
    assert len(res["results"]) == 2 and all({"external_id", "text", "metadata"} <= r.keys() for r in res["results"])
    cols = {c["name"]: c for c in cli("collections", "--json")["collections"]}
    assert cols["caps"]["kind"] == "texts" and cols["photos"]["itm_features"] is True


def test_caption_and_search_modes(cli, tmp_path, tiny_models):
    write_images(tmp_path / "imgs", 6)
    out = cli(
        "index",
        str(tmp_path / "imgs"),
        "-c",
        "p",
        "--captions",
        "--caption-model",
        str(tiny_models["blip-caption"]),
        "--max-new-tokens",
        "5",
        "--json",
    )
    assert out["added"] == 6
    caps = cli(
        "caption",
        str(tmp_path / "imgs" / "img_00000.jpg"),
        str(tmp_path / "nope.jpg"),
        "--caption-model",
        str(tiny_models["blip-caption"]),
        "--max-new-tokens",
        "5",
        "--json",
    )
    assert caps["results"][0]["caption"] and caps["results"][1]["caption"] is None and caps["results"][1]["error"]
    again = cli(
        "caption", "-c", "p", "--caption-model", str(tiny_models["blip-caption"]), "--max-new-tokens", "5", "--json"
    )
    assert again["captioned"] == 0  # index-time captions came from the same model and settings
    res = cli(
        "search",
        "--image",
        str(tmp_path / "imgs" / "img_00002.jpg"),
        "-c",
        "p",
        "--target",
        "captions",
        "-k",
        "3",
        "--json",
    )
    assert res["results"] and all(r["caption"] for r in res["results"])
    word = caps["results"][0]["caption"].split()[0]
    kw = cli("search", word, "-c", "p", "--mode", "keyword", "--json")
    assert kw["mode"] == "keyword" and 0 in [r["id"] for r in kw["results"]]
    hy = cli("search", word, "-c", "p", "--mode", "hybrid", "--rerank", "--json")
    assert hy["results"] and all(r["itm_score"] is not None for r in hy["results"])
    cli("search", word, "-c", "p", "--mode", "bogus", code=2)


def test_search_filters_flags(cli, tmp_path):
    write_images(tmp_path / "a", 5)
    write_images(tmp_path / "b", 5, start=50, fmt="PNG")
    cli("index", str(tmp_path / "a"), str(tmp_path / "b"), "-c", "f", "--json")
    res = cli("search", "x", "-c", "f", "-k", "10", "--where", "format=PNG", "--json")
    assert len(res["results"]) == 5 and all(r["uri"].endswith(".png") for r in res["results"])
    res = cli("search", "x", "-c", "f", "-k", "10", "--uri-prefix", str((tmp_path / "a").resolve()), "--json")
    assert len(res["results"]) == 5 and all("/a/" in r["uri"] for r in res["results"])
    cli("search", "x", "-c", "f", "--where", "oops", code=2)
    cli("search", "x", "-c", "f", "--added-after", "not-a-date", code=2)


def test_jobs_keys_delete_compact(cli, tmp_path):
    write_images(tmp_path / "imgs", 8)
    write_bad_files(tmp_path / "imgs" / "bad")
    cli("index", str(tmp_path / "imgs"), "--collection", "c", "--batch-size", "4", "--json")
    jobs = cli("jobs", "list", "--json")["jobs"]
    assert len(jobs) == 1 and jobs[0]["state"] == "succeeded" and jobs[0]["collection"] == "c"
    job = cli("jobs", "show", jobs[0]["id"], "--json")
    assert job["counts"]["added"] == 8 and job["counts"]["failed"] == 5
    assert sum(job["counts"]["failed_by_reason"].values()) == 5
    reasons = job["counts"]["failed_by_reason"]  # stable codes, not message prefixes
    assert {"empty", "not_an_image", "too_many_pixels", "corrupt"} >= reasons.keys() >= {"empty", "too_many_pixels"}
    assert {"read", "decode", "model", "write", "index"} <= job["timings"].keys()
    cli("jobs", "cancel", jobs[0]["id"], code=4)  # finished: nothing to cancel
    cli("jobs", "show", "nope", code=3)

    # A job killed mid-way stays "running" in the catalog; resume re-runs it, skipping what was committed.
    from storage.catalog import open_catalog

    catalog = open_catalog(f"sqlite:///{(tmp_path / 'data' / 'catalog.db').resolve()}")
    write_images(tmp_path / "more", 3, start=50)
    killed = catalog.create_job("index", "c", None, {"paths": [str(tmp_path / "imgs"), str(tmp_path / "more")]})
    out = cli("jobs", "resume", killed, "--json")
    assert out["state"] == "succeeded" and out["counts"]["added"] == 3 and out["counts"]["skipped_duplicates"] == 8

    key = cli("keys", "create", "--name", "ci", "--scope", "admin", "--json")
    assert key["key"].startswith("bsk_") and key["scope"] == "admin"
    listed = cli("keys", "list", "--json")["keys"]
    assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0]
    assert cli("keys", "revoke", key["id"], "--json")["revoked"] is True
    cli("keys", "create", "--name", "x", "--scope", "root", code=2)

    deleted = cli("delete", "0", "1", "999", "--collection", "c", "--json")
    assert deleted["deleted"] == [0, 1] and deleted["not_found"] == [999] and deleted["count"] == 9
    res = cli("search", "a red square", "--collection", "c", "-k", "20", "--json")
    assert {r["id"] for r in res["results"]}.isdisjoint({0, 1}) and len(res["results"]) == 9
    comp = cli("compact", "--collection", "c", "--json")
    assert comp["rows_removed"] == 2
    assert len(cli("search", "a red square", "--collection", "c", "-k", "20", "--json")["results"]) == 9
