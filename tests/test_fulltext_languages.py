"""Keyword search over captions and OCR text in many scripts: the same results on SQLite FTS5
and PostgreSQL (storage/text_analysis.py analyses text once, for both)."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine

from storage.collection import Collection
from storage.fulltext import KeywordIndex
from storage.text_analysis import query_terms, tokens
from tests.helpers import write_images

PG_URL = os.environ.get("BLIPSEARCH_TEST_POSTGRES_URL")

CAPTIONS = [
    "北京大学的图书馆很大",  # Chinese
    "東京タワーの夜景がきれい",  # Japanese
    "مكتبة المدينة الكبيرة",  # Arabic
    "पुस्तकालय में बहुत किताबें हैं",  # Hindi
    "La biblioteca está cerca de la estación",  # Spanish
    "Die Straße zur Bücherei ist gesperrt",  # German
]
OCR = {0: "OPEN 24 HOURS", 2: "出口 Exit", 4: "Café Zürich"}
QUERIES = {
    "图书馆": {0},
    "北京": {0},
    "大学的图书馆": {0},
    "大学图书馆": set(),  # not the sequence in the text
    "京": {0, 1},  # a lone character: any word starting with it
    "東京タワー": {1},
    "タワー": {1},
    "المدينة": {2},
    "पुस्तकालय": {3},
    "किताबें": {3},
    "estación": {4},
    "estacion": {4},  # accents folded alike on both engines
    "biblioteca": {4},
    "strasse": {5},
    "Straße": {5},
    "bücherei": {5},
    '"24 hours"': {0},
    '"hours 24"': set(),
    "出口": {2},
    "cafe zurich": {4},
    "exit": {2},
}


def test_analysis_tokens():
    assert tokens("北京大学") == ["北京", "京大", "大学"]
    assert tokens("Straße, café!") == ["strasse", "cafe"]
    assert tokens("नमस्ते") == ["नमस्ते"]  # vowel signs are kept
    assert [t.tokens for t in query_terms('"big  car" 东京')] == [("big", "car"), ("东京",)]


@pytest.fixture(scope="module")
def coll(tmp_path_factory, blip_embedder):
    from blipsearch.config import Settings
    from service.indexing import index_paths

    tmp = tmp_path_factory.mktemp("lang")
    settings = Settings(data_dir=tmp / "d", batch_size=8)
    write_images(tmp / "in", len(CAPTIONS))
    name = f"l{uuid.uuid4().hex[:8]}"
    index_paths(settings, [tmp / "in"], name, embedder=blip_embedder, progress=False)
    c = Collection.open(settings.data_dir, name)
    values = {i: {"caption": cap} for i, cap in enumerate(CAPTIONS)}
    for i, text in OCR.items():
        values[i]["ocr_text"] = text
    c.update_columns(c.manifest.shards[0].file, values)
    return c, tmp


def _engines(tmp):
    out = [KeywordIndex(create_engine(f"sqlite:///{tmp / 'kw.db'}"))]
    if PG_URL:
        out.append(KeywordIndex(create_engine(PG_URL)))
    return out


def test_every_language_found_and_engines_agree(coll):
    c, tmp = coll
    engines = _engines(tmp)
    for query, want in QUERIES.items():
        got = [{rid for rid, _ in kw.search(c, query, 10)} for kw in engines]
        assert got[0] == want, (query, got)
        assert all(g == got[0] for g in got), (query, got)  # PostgreSQL agrees with FTS5
    for kw in engines:
        assert {rid for rid, _ in kw.search(c, "exit", 10, target="ocr")} == {2}
        assert {rid for rid, _ in kw.search(c, "exit", 10, target="captions")} == set()
        assert {rid for rid, _ in kw.search(c, "biblioteca", 10, target="ocr")} == set()


@pytest.mark.skipif(not PG_URL, reason="BLIPSEARCH_TEST_POSTGRES_URL not set (no PostgreSQL server)")
def test_real_ocr_index_agrees_on_postgres(tmp_path, blip_embedder):
    pytest.importorskip("rapidocr_onnxruntime")
    ocr_render = pytest.importorskip("ocr_render")
    if not ocr_render.has_fonts():
        pytest.skip("Debian fonts missing (scripts/ensure_fonts.sh)")
    from blipsearch.config import Settings
    from service.indexing import index_paths

    words = ["Tangerine", "Observatory", "开放时间"]
    folder = tmp_path / "in"
    folder.mkdir()
    for i, w in enumerate(words):
        ocr_render.render(w, size_px=30, cjk=i == 2, seed=40 + i).image.save(folder / f"{i}.png")
    settings = Settings(data_dir=tmp_path / "d", batch_size=8)
    name = f"o{uuid.uuid4().hex[:8]}"
    index_paths(settings, [folder], name, embedder=blip_embedder, progress=False, ocr=True)
    c = Collection.open(settings.data_dir, name)
    uris = {r["id"]: r["uri"].rsplit("/", 1)[-1] for r in c.read_table(["id", "uri"]).to_pylist()}
    engines = _engines(tmp_path)
    for i, w in enumerate(words):
        for query in (w.lower(), w[:4] if i == 2 else w.upper()):
            got = [[uris[rid] for rid, _ in kw.search(c, query, 10, target="ocr")] for kw in engines]
            assert got[0] == [f"{i}.png"] and got[1] == got[0], (query, got)
