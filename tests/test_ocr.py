"""OCR with the real RapidOCR models: index --ocr through the CLI, keyword/hybrid/--target ocr
search, boxes where the text is, backfill as an idempotent job, uploads, POST /v1/ocr, and
bounded work on hostile images."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("rapidocr_onnxruntime", reason="the [ocr] extra (rapidocr-onnxruntime) is not installed")
ocr_render = pytest.importorskip("ocr_render")
if not ocr_render.has_fonts():
    pytest.skip("Debian fonts missing (scripts/ensure_fonts.sh)", allow_module_level=True)

from cli.main import app  # noqa: E402
from models.ocr.base import OcrLimits, tiles, valid_box  # noqa: E402

# Words the models have to read; one image each, plus a Chinese sign and a text-free texture.
WORDS = ["Quarterly", "lighthouse", "MARMALADE", "Zebra 4217"]
CJK = "图书馆开放"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ocr")
    folder = root / "imgs"
    folder.mkdir()
    rendered = {}
    for i, word in enumerate(WORDS):
        r = ocr_render.render(word, size_px=[22, 30, 40, 26][i], rotation=[0, 4, -3, 0][i], textured=i == 2, seed=i)
        r.image.save(folder / f"w{i}.png")
        rendered[f"w{i}.png"] = r
    r = ocr_render.render(CJK, size_px=34, cjk=True, seed=9)
    r.image.save(folder / "cjk.png")
    rendered["cjk.png"] = r
    rng = np.random.default_rng(3)
    from PIL import Image

    Image.fromarray(ocr_render.texture(400, 300, rng)).save(folder / "plain.png")
    return root, folder, rendered


@pytest.fixture(scope="module")
def cli(corpus, tiny_models):
    root, _, _ = corpus
    mp = pytest.MonkeyPatch()
    mp.setenv("BLIPSEARCH_DATA_DIR", str(root / "data"))
    mp.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
    mp.setenv("HF_HUB_OFFLINE", "1")
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> dict:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (result.stdout, result.stderr)
        return json.loads(result.stdout) if "--json" in args and result.stdout.strip() else {}

    yield run
    mp.undo()


@pytest.fixture(scope="module")
def indexed(cli, corpus):
    _, folder, rendered = corpus
    out = cli("index", str(folder), "--collection", "signs", "--ocr", "--json")
    assert out["added"] == len(rendered) + 1 and out["failed"] == 0, out
    return rendered


def _top(cli, query: str, *extra: str) -> list[dict]:
    return cli("search", query, "--collection", "signs", "--json", "-k", "6", *extra)["results"]


def _name(hit: dict) -> str:
    return hit["uri"].rsplit("/", 1)[-1]


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_each_word_is_found_by_keyword_and_hybrid(cli, indexed, mode):
    for name, r in indexed.items():
        query = r.text.split()[0] if name != "cjk.png" else r.text
        hits = _top(cli, query.lower(), "--mode", mode)
        assert hits and _name(hits[0]) == name, (query, [(_name(h), h.get("ocr_text")) for h in hits])


def test_boxes_overlap_the_rendered_text_and_ocr_match_names_the_line(cli, indexed):
    for name, r in indexed.items():
        query = r.text.split()[0] if name != "cjk.png" else r.text
        hit = _top(cli, query, "--mode", "keyword")[0]
        match = hit["ocr_match"]
        assert query.lower() in match["line"].lower() and match["score"] == 1.0
        xs, ys = [p[0] for p in match["box"]], [p[1] for p in match["box"]]
        iou = ocr_render.box_iou((min(xs), min(ys), max(xs), max(ys)), r.box)
        assert iou > 0.4, (name, match["box"], r.box, iou)


def test_cjk_sub_words_phrases_and_target(cli, indexed):
    assert _name(_top(cli, "图书馆", "--mode", "keyword")[0]) == "cjk.png"  # a word inside the run
    assert _top(cli, "馆书图", "--mode", "keyword") == []  # the characters, out of order: no match
    assert [_name(h) for h in _top(cli, '"zebra 4217"', "--mode", "keyword")] == ["w3.png"]
    assert _top(cli, '"4217 zebra"', "--mode", "keyword") == []
    assert [_name(h) for h in _top(cli, "lighthouse", "--mode", "keyword", "--target", "ocr")] == ["w1.png"]
    assert _top(cli, "lighthouse", "--mode", "keyword", "--target", "captions") == []
    out = cli("search", "lighthouse", "--collection", "signs", "--target", "ocr", "--json", code=2)
    assert "keyword or hybrid" in out["error"]["message"]


def test_records_store_lines_engine_and_threshold(indexed, corpus, tiny_models):
    from storage.collection import Collection

    root, _, _ = corpus
    coll = Collection.open(root / "data", "signs")
    assert coll.manifest.ocr == {"engine": "rapidocr", "min_confidence": 0.5}
    table = coll.read_table(["uri", "ocr_text", "ocr_lines", "ocr_engine"]).to_pylist()
    by_name = {r["uri"].rsplit("/", 1)[-1]: r for r in table}
    assert by_name["plain.png"]["ocr_text"] == ""
    for name in indexed:
        rec = by_name[name]
        assert rec["ocr_engine"].startswith("rapidocr-onnxruntime 1.4.4")
        lines = json.loads(rec["ocr_lines"])
        assert lines and all(len(ln["box"]) == 4 and 0 <= ln["confidence"] <= 1 for ln in lines)
        assert rec["ocr_text"] == "\n".join(ln["text"] for ln in lines if ln["confidence"] >= 0.5)


def test_backfill_is_a_resumable_idempotent_job_and_kept_by_reembed(cli, corpus, indexed, tiny_models):
    _, folder, _ = corpus
    cli("index", str(folder), "--collection", "later", "--json")
    assert _top_in(cli, "later", "marmalade") == []
    first = cli("ocr", "--collection", "later", "--json")
    assert first["read"] == len(indexed) + 1 and first["failed"] == 0
    assert [_name(h) for h in _top_in(cli, "later", "marmalade")] == ["w2.png"]
    again = cli("ocr", "--collection", "later", "--json")
    assert again["read"] == 0 and again["total"] == 0
    jobs = cli("jobs", "list", "--collection", "later", "--json")["jobs"]
    ocr_jobs = [j for j in jobs if j["kind"] == "ocr"]
    assert len(ocr_jobs) == 2 and all(j["state"] == "succeeded" for j in ocr_jobs)
    assert ocr_jobs[-1]["counts"]["read"] == len(indexed) + 1
    # OCR is now on for the collection: a new image gets it without --ocr
    extra = folder.parent / "extra"
    extra.mkdir()
    ocr_render.render("Pelican", size_px=30, seed=21).image.save(extra / "pelican.png")
    assert cli("index", str(extra), "--collection", "later", "--json")["added"] == 1
    assert [_name(h) for h in _top_in(cli, "later", "pelican")] == ["pelican.png"]
    cli("reembed", "--collection", "later", "--model", str(tiny_models["blip2-itm"]), "--json")
    assert [_name(h) for h in _top_in(cli, "later", "pelican")] == ["pelican.png"]
    from storage.collection import Collection

    assert Collection.open(corpus[0] / "data", "later").manifest.ocr is not None  # still on after reembed


def _top_in(cli, collection: str, query: str) -> list[dict]:
    return cli("search", query, "--collection", collection, "--mode", "keyword", "--json")["results"]


def test_ocr_files_and_bad_engine(cli, corpus):
    _, folder, _ = corpus
    out = cli("ocr", str(folder / "w0.png"), "--json")
    assert "Quarterly" in out["results"][0]["text"]
    out = cli("ocr", str(folder / "w0.png"), "--ocr-engine", "nope", "--json", code=2)
    assert "--ocr-engine" in out["error"]["message"]


@pytest.fixture(scope="module")
def engine():
    from indexer.ocr import load_engine

    return load_engine("rapidocr", 1, 16)


def test_bad_inputs_are_bounded(engine):
    from PIL import Image, ImageDraw, ImageFont

    # 10,000 tiny text regions, and 300 legible words: at most max_regions recognised (the cut is
    # the reason), in bounded time
    img = Image.new("RGB", (2000, 2000), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.truetype(ocr_render.font_path(False), 10)
    for i in range(10_000):
        d.text(((i % 100) * 20, (i // 100) * 20), str(i % 10), font=font, fill="black")
    t0 = time.perf_counter()
    res = engine.read(np.asarray(img), OcrLimits(max_regions=40))
    assert len(res.lines) <= 40 and time.perf_counter() - t0 < 120, res.error
    img = Image.new("RGB", (1500, 1500), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.truetype(ocr_render.font_path(False), 24)
    for i in range(300):
        d.text(((i % 10) * 150 + 5, (i // 10) * 50 + 5), f"w{i:03d}", font=font, fill="black")
    res = engine.read(np.asarray(img), OcrLimits(max_regions=40, time_budget_s=300))
    assert res.reason == "ocr_too_many_regions" and 30 <= len(res.lines) <= 40, (res.error, len(res.lines))
    # a 20,000-px-wide panorama with one word near its end, all noise, and a budget too small
    pano = np.full((200, 20_000, 3), 235, np.uint8)
    word = np.asarray(ocr_render.render("Harbour", size_px=40, canvas=(400, 200), seed=5).image)
    pano[:, 19_000:19_400] = word
    res = engine.read(pano, OcrLimits())
    assert any("harbour" in ln.text.lower() for ln in res.lines), [ln.text for ln in res.lines]
    assert all(19_000 <= min(p[0] for p in ln.box) for ln in res.lines if "arbour" in ln.text)
    noise = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    assert engine.read(noise, OcrLimits()).error is None
    res = engine.read(noise, OcrLimits(time_budget_s=1e-6))
    assert res.reason == "ocr_timeout" and res.lines == []
    bad = engine.read(np.zeros((0, 5, 3), np.uint8))
    assert bad.reason == "ocr_failed"


def test_degenerate_boxes_and_tiles():
    assert not valid_box(np.array([[0, 0], [0, 0], [0, 0], [0, 0]], np.float32), 100, 100, 3)
    assert not valid_box(np.array([[0, 0], [np.nan, 0], [5, 5], [0, 5]], np.float32), 100, 100, 3)
    assert not valid_box(np.array([[0, 0], [50, 0], [50, 1], [0, 1]], np.float32), 100, 100, 3)
    assert not valid_box(np.array([[0, 0], [500, 0], [500, 10], [0, 10]], np.float32), 100, 100, 3)
    assert valid_box(np.array([[1, 1], [50, 1], [50, 12], [1, 12]], np.float32), 100, 100, 3)
    assert tiles(640, 480, OcrLimits()) == [(0, 0, 640, 480)]
    cut = tiles(20_000, 200, OcrLimits(max_tiles=8))
    assert len(cut) == 8 and cut[0][0] == 0 and cut[-1][2] == 20_000


def test_gate_skips_text_free_images_and_keeps_text(engine):
    from indexer.ocr import OcrOptions, OcrStage

    stage = OcrStage(OcrOptions(), engine=engine)
    try:
        flat = np.full((300, 400, 3), 128, np.uint8)
        assert stage.run(flat).gated
        text = np.asarray(ocr_render.render("Gatekeeper", size_px=16, seed=2).image)
        res = stage.run(text)
        assert not res.gated and "gatekeeper" in res.text(0.5).lower()
    finally:
        stage.close()


def test_upload_ocr_route_and_search_ocr_match(corpus, indexed, tiny_models):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from blipsearch.config import Settings

    root = corpus[0]
    settings = Settings(data_dir=root / "data", model=str(tiny_models["blip-itm"]))
    buf = io.BytesIO()
    ocr_render.render("Cinnamon", size_px=28, seed=33).image.save(buf, "PNG")
    from storage.api_keys import create_key
    from storage.catalog import open_catalog

    key = create_key(open_catalog(settings.catalog_url()), "ocr-writer", "write")[0]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post("/v1/ocr", files={"file": ("c.png", buf.getvalue(), "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert "Cinnamon" in body["ocr_text"] and body["ocr_engine"].startswith("rapidocr")
        assert len(body["lines"][0]["box"]) == 4
        bad = client.post("/v1/ocr", files={"file": ("c.png", b"not an image", "image/png")})
        assert bad.status_code in (415, 422)
        # an upload into a collection with OCR on is read too
        up = client.post(
            "/v1/collections/signs/images",
            files=[("files", ("c.png", buf.getvalue(), "image/png"))],
            headers={"Authorization": f"Bearer {key}"},
        )
        assert up.status_code in (200, 201), up.text
        res = client.post(
            "/v1/search/text", json={"query": "cinnamon", "collection": "signs", "mode": "keyword", "k": 3}
        ).json()
        assert len(res["results"]) == 1 and res["results"][0]["ocr_match"]["line"].lower() == "cinnamon"
        assert res["results"][0]["width"] > 0
        res = client.post(
            "/v1/search/text",
            json={"query": "marmalade", "collection": "signs", "mode": "hybrid", "target": "ocr", "k": 3},
        ).json()
        assert res["results"][0]["ocr_match"]["box"]


def test_sharded_serving_finds_ocr_text(corpus, indexed, tiny_models):
    from blipsearch.config import Settings
    from search.sharded import LocalShard, ShardedIndex, split
    from service.engines import open_engine

    settings = Settings(data_dir=corpus[0] / "data", model=str(tiny_models["blip-itm"]))

    def load(coll):
        m = coll.manifest
        parts = [LocalShard.build(coll, s) for s in split(m.shards, 2) if s]
        return ShardedIndex(parts, m.dim, m.vectors_per_item, ntotal=m.count, lookup=coll.embeddings_of)

    engine = open_engine(settings, "signs", index_loader=load)
    assert isinstance(engine.index, ShardedIndex)
    for mode in ("keyword", "hybrid"):
        hits = engine.search_text("lighthouse", 3, mode=mode, target="ocr").hits
        assert hits[0].record["uri"].endswith("w1.png")
