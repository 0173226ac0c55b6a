"""Capture metadata and places of a photo library as phones and cameras write it (JPEG with
EXIF from piexif, HEIC from pillow-heif, DNG from PiDNG): the stored columns equal what an
independent EXIF reader (exifread) reports, places are right, absurd values are dropped with
notes, the photo filters equal brute force over the stored fields, ``--sort taken_at`` orders
by date, and ``backfill-metadata`` fills records indexed before, idempotently."""

from __future__ import annotations

import json
import math
import unicodedata
from datetime import datetime, timezone

import pytest
from typer.testing import CliRunner

from blipsearch.config import Settings
from cli.main import app
from search.engine import QueryOptions
from search.filters import Filters
from service.engines import open_engine
from service.indexing import index_paths
from storage.collection import Collection
from storage.schema import PHOTO_FIELDS
from tests.photo_library import PLACES, Shot, independent_reading, photo_bytes, random_library, write_library

EXACT = [
    Shot(
        "paris",
        "2022:05:01 10:00:00",
        "+02:00",
        "Apple",
        "iPhone 15 Pro",
        "iPhone 15 Pro back camera",
        (*PLACES["paris"], 35.0),
    ),
    Shot("tokyo_local", "2021:03:04 05:06:07", None, "SONY", "ILCE-7M3", None, (*PLACES["tokyo"], 40.0), seed=3),
    Shot(
        "sydney_heic", "2020:12:31 23:59:59", "+11:00", "Apple", "iPhone 12", None, (*PLACES["sydney"], -2.5), "HEIF", 4
    ),
    Shot("nyc_heic", "2023:07:04 21:15:00", "-04:00", "Google", "Pixel 8", None, (*PLACES["nyc"], 10.0), "HEIF", 5),
    Shot("canon_dng", "2019:08:09 10:11:12", None, "Canon", "Canon EOS R5", fmt="DNG", seed=6),
]
HOSTILE = {  # written as a broken camera or a hostile file would: each value must be dropped, the image kept
    "0th": {271: b"\xff\xfe\x00bad" * 200},
    "Exif": {36867: b"0000:00:00 00:00:00"},
    "GPS": {1: b"N", 2: ((95, 1), (0, 1), (0, 1)), 3: b"E", 4: ((0, 0), (0, 1), (0, 1))},
}


@pytest.fixture(scope="module")
def lib(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("photos")
    shots = [*EXACT, *random_library(20, seed=1)]
    paths = write_library(root / "lib", shots)
    (root / "lib" / "hostile.jpg").write_bytes(photo_bytes(Shot("hostile", seed=9), HOSTILE))
    (root / "lib" / "year0.jpg").write_bytes(photo_bytes(Shot("y", seed=10), {"Exif": {36867: b"0000:01:01 00:00:00"}}))
    settings = Settings(data_dir=root / "data", model=str(tiny_models["blip-itm"]), batch_size=8, jpeg_draft=False)
    report = index_paths(settings, [root / "lib"], "c", progress=False)
    assert report.failures == []
    coll = Collection.open(settings.data_dir, "c")
    rows = {r["uri"]: r for r in coll.read_table().drop(["embedding"]).to_pylist()}
    return settings, paths, rows, root


def test_every_file_indexed_with_metadata_equal_to_an_independent_exif_reader(lib):
    _, paths, rows, _ = lib
    assert len(rows) == 27
    for name, path in paths.items():
        got, want = rows[str(path)], independent_reading(path)
        for key in ("taken_at", "taken_at_local", "camera_make", "camera_model", "lens"):
            assert got[key] == want[key], (name, key, got[key], want[key])
        for key in ("gps_lat", "gps_lon", "gps_alt"):
            assert (got[key] is None) == (want[key] is None), (name, key)
            if want[key] is not None:
                assert got[key] == pytest.approx(want[key], abs=1e-6), (name, key)
        assert json.loads(got["capture_notes"]) == []
    paris = rows[str(paths["paris"])]
    assert paris["taken_at"] == datetime(2022, 5, 1, 8, 0, tzinfo=timezone.utc) and paris["taken_at_local"] is False
    local = rows[str(paths["tokyo_local"])]
    assert local["taken_at"] == datetime(2021, 3, 4, 5, 6, 7, tzinfo=timezone.utc) and local["taken_at_local"] is True
    dng = rows[str(paths["canon_dng"])]
    assert (dng["format"], dng["camera_make"], dng["camera_model"]) == ("DNG", "Canon", "Canon EOS R5")


def test_places_offline(lib):
    _, paths, rows, _ = lib
    want = {
        "paris": ("FR", "France", "Île-de-France", "Paris"),
        "tokyo_local": ("JP", "Japan", "Tokyo", None),
        "sydney_heic": ("AU", "Australia", "New South Wales", None),
        "nyc_heic": ("US", "United States", "New York", "New York City"),
    }
    for name, (code, country, region, city) in want.items():
        r = rows[str(paths[name])]
        assert (r["country_code"], r["country"], r["region"]) == (code, country, region), name
        assert city is None or r["city"] == city
    assert rows[str(paths["canon_dng"])]["country_code"] is None  # no GPS, no place


def test_absurd_values_are_dropped_with_notes_never_failing_the_image(lib):
    _, _, rows, root = lib
    hostile = rows[str((root / "lib" / "hostile.jpg").resolve())]
    assert hostile["taken_at"] is None and hostile["gps_lat"] is None and hostile["gps_lon"] is None
    notes = " | ".join(json.loads(hostile["capture_notes"]))
    assert "DateTimeOriginal" in notes and "GPSLatitude" in notes and "GPSLongitude" in notes
    assert len(hostile["camera_make"]) <= 128 and "cut to 128" in notes
    year0 = rows[str((root / "lib" / "year0.jpg").resolve())]
    assert year0["taken_at"] is None and "not a real date" in year0["capture_notes"]


def _fold(s):
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c)).casefold()


def _km(a, b, c, d):
    p1, p2, dp, dl = map(math.radians, (a, c, c - a, d - b))
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


def _brute(rows, f):
    out = set()
    for r in rows.values():
        t = r["taken_at"]
        if f.get("taken_after") and (t is None or t < f["taken_after"]):
            continue
        if f.get("taken_before") and (t is None or t >= f["taken_before"]):
            continue
        if f.get("near"):
            lat, lon, km = f["near"]
            if r["gps_lat"] is None or _km(lat, lon, r["gps_lat"], r["gps_lon"]) > km:
                continue
        if f.get("place"):
            names = [r[k] for k in ("country_code", "country", "region", "city") if r[k]]
            if _fold(f["place"]) not in {_fold(n) for n in names}:
                continue
        if f.get("camera") and _fold(f["camera"]) not in _fold(f"{r['camera_make'] or ''} {r['camera_model'] or ''}"):
            continue
        out.add(r["id"])
    return out


FILTERS = [
    {"taken_after": datetime(2021, 1, 1, tzinfo=timezone.utc)},
    {"taken_before": datetime(2020, 6, 1, tzinfo=timezone.utc)},
    {
        "taken_after": datetime(2020, 1, 1, tzinfo=timezone.utc),
        "taken_before": datetime(2022, 1, 1, tzinfo=timezone.utc),
    },
    {"near": (48.8566, 2.3522, 50.0)},
    {"near": (45.0, 8.0, 700.0)},
    {"place": "france"},
    {"place": "ILE-DE-FRANCE"},
    {"place": "JP"},
    {"place": "New York City"},
    {"camera": "iphone"},
    {"camera": "canon eos"},
    {"camera": "sony", "near": (35.6895, 139.6917, 100.0)},
    {"place": "Bavaria", "taken_after": datetime(2019, 6, 1, tzinfo=timezone.utc)},
]


@pytest.mark.parametrize("f", FILTERS, ids=[json.dumps(f, default=str)[:60] for f in FILTERS])
def test_filters_equal_brute_force_over_stored_fields(lib, f, blip_embedder):
    settings, _, rows, _ = lib
    engine = open_engine(settings, "c", embedder=blip_embedder)
    hits = engine.search_text("a photo", 100, options=QueryOptions(filters=Filters(**f))).hits
    want = _brute(rows, f)
    assert {h.id for h in hits} == want
    assert want or f.get("place") == "Bavaria"  # the cases are not vacuous (Bavaria may draw no Munich shot)


def test_sort_taken_at_newest_first_undated_last(lib, blip_embedder):
    settings, _, rows, _ = lib
    engine = open_engine(settings, "c", embedder=blip_embedder)
    hits = engine.search_text("a photo", 100, options=QueryOptions(sort="taken_at")).hits
    dates = [h.record["taken_at"] for h in hits]
    dated = [d for d in dates if d is not None]
    assert dated == sorted(dated, reverse=True) and dates[: len(dated)] == dated and len(hits) == len(rows)


def test_cli_flags_api_filters_and_counts(lib, monkeypatch):
    settings, _, rows, _ = lib
    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("BLIPSEARCH_MODEL", settings.model)
    runner = CliRunner()

    def run(*args, code=0):
        res = runner.invoke(app, [*args, "--json"])
        assert res.exit_code == code, (res.stdout, res.stderr)
        return json.loads(res.stdout)

    out = run("search", "a photo", "-c", "c", "-k", "100", "--near", "48.8566,2.3522,50", "--camera", "apple")
    want = _brute(rows, {"near": (48.8566, 2.3522, 50.0), "camera": "apple"})
    assert {r["id"] for r in out["results"]} == want and want
    assert all(r["country_code"] == "FR" and r["taken_at"] for r in out["results"])
    out = run(
        "search",
        "a photo",
        "-c",
        "c",
        "-k",
        "100",
        "--place",
        "japan",
        "--taken-before",
        "2030-01-01",
        "--sort",
        "taken_at",
    )
    assert {r["id"] for r in out["results"]} == _brute(rows, {"place": "japan"})
    bad = run("search", "x", "-c", "c", "--near", "95,0,10", code=2)
    assert "near" in bad["error"]["message"]
    stats = run("index-stats", "-c", "c")
    counts = stats["photo_fields"]
    for field in PHOTO_FIELDS:
        if field != "taken_at_local":
            assert counts[field] == sum(r[field] is not None for r in rows.values()), field
    assert run("collections")["collections"][0]["photo_fields"] == counts


def test_backfill_metadata_fills_old_records_idempotently(lib, tmp_path, tiny_models, monkeypatch):
    root = lib[3]
    settings = Settings(data_dir=tmp_path / "data", model=str(tiny_models["blip-itm"]), batch_size=8)
    index_paths(settings, [root / "lib"], "old", progress=False)
    coll = Collection.open(settings.data_dir, "old")
    fresh = {r["id"]: r for r in coll.read_table().drop(["embedding"]).to_pylist()}
    for shard in coll.manifest.shards:  # as indexed before these columns existed: all null
        ids = [r for r in fresh if shard.min_id <= r <= shard.max_id]
        coll.update_columns(shard.file, {r: dict.fromkeys((*PHOTO_FIELDS, "capture_notes")) for r in ids})
    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(settings.data_dir))
    res = CliRunner().invoke(app, ["backfill-metadata", "--collection", "old", "--json"])
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["updated"] == len(fresh) and out["failed"] == 0
    assert out["with_place"] == sum(r["country_code"] is not None for r in fresh.values())
    after = {r["id"]: r for r in Collection.open(settings.data_dir, "old").read_table().drop(["embedding"]).to_pylist()}
    assert after == fresh
    again = json.loads(CliRunner().invoke(app, ["backfill-metadata", "-c", "old", "--json"]).stdout)
    assert again["updated"] == 0


def test_api_filters_sort_and_record_fields(lib):
    from fastapi.testclient import TestClient

    from api.app import create_app

    settings, paths, rows, _ = lib
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        body = {"collection": "c", "query": "a photo", "k": 100, "sort": "taken_at"}
        r = client.post("/v1/search/text", json={**body, "filters": {"near": "35.6895,139.6917,100", "camera": "SONY"}})
        assert r.status_code == 200, r.text
        got = r.json()["results"]
        assert {h["id"] for h in got} == _brute(rows, {"near": (35.6895, 139.6917, 100.0), "camera": "sony"})
        dates = [h["taken_at"] for h in got if h["taken_at"]]
        assert dates == sorted(dates, reverse=True) and all(h["country"] == "Japan" for h in got)
        r = client.post("/v1/search/text", json={**body, "filters": {"place": "île-de-france"}})
        assert {h["id"] for h in r.json()["results"]} == _brute(rows, {"place": "ile-de-france"})
        for bad in ({"near": "95,0,1"}, {"near": [1, 2]}, {"place": " "}, {"taken_after": "yesterday"}):
            r = client.post("/v1/search/text", json={**body, "filters": bad})
            assert r.status_code == 422, (bad, r.text)
        rid = rows[str(paths["paris"])]["id"]
        rec = client.get(f"/v1/collections/c/images/{rid}").json()
        assert (rec["camera_model"], rec["city"], rec["taken_at_local"]) == ("iPhone 15 Pro", "Paris", False)
        assert rec["taken_at"].startswith("2022-05-01T08:00:00")
        info = client.get("/v1/collections/c").json()
        assert info["photo_fields"]["city"] == sum(r["city"] is not None for r in rows.values())


def test_xmp_fills_what_exif_lacks():
    import io

    from PIL import Image

    from media.exif import read_capture

    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
        b'exif:DateTimeOriginal="2018-02-03T04:05:06+01:00" tiff:Make="NIKON CORPORATION" '
        b'exif:GPSLatitude="48,51.396N" exif:GPSLongitude="2,21.132E"><tiff:Model>NIKON D850</tiff:Model>'
        b"</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 10)).save(buf, "JPEG", xmp=xmp)
    got = read_capture(buf.getvalue())
    assert got["taken_at"] == datetime(2018, 2, 3, 3, 5, 6, tzinfo=timezone.utc) and got["taken_at_local"] is False
    assert (got["camera_make"], got["camera_model"]) == ("NIKON CORPORATION", "NIKON D850")
    assert got["gps_lat"] == pytest.approx(48.8566) and got["gps_lon"] == pytest.approx(2.3522)
