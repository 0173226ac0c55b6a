"""The HTTP API: routes, shapes, and every bad-input case answering 4xx (never 5xx)."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from blipsearch.config import Settings
from service.indexing import index_paths
from tests.helpers import make_image, write_images


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory, blip_embedder, tiny_models):
    root = tmp_path_factory.mktemp("api")
    settings = Settings(
        data_dir=root / "data",
        batch_size=8,
        max_upload_bytes=200_000,
        caption_model=str(tiny_models["blip-caption"]),
        max_image_pixels=10_000_000,
    )
    write_images(root / "imgs", 12)
    index_paths(settings, [root / "imgs"], "photos", embedder=blip_embedder, progress=False)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _ok_health(client):
    assert client.get("/healthz").json() == {"status": "ok", "detail": {}}


def test_text_search_shape(client):
    r = client.post("/v1/search/text", json={"query": "a red square", "collection": "photos", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 3 and "timing_ms" in body
    for res in body["results"]:
        assert {"id", "uri", "score", "itc_score", "itm_score", "caption", "metadata"} <= res.keys()
    rr = client.post(
        "/v1/search/text", json={"query": "a red square", "collection": "photos", "k": 3, "rerank": True, "rerank_k": 8}
    ).json()
    assert all(0 <= x["itm_score"] <= 1 for x in rr["results"])


def test_image_search_and_records(client):
    img = make_image(4)
    r = client.post(
        "/v1/search/image", files={"file": ("q.jpg", _jpeg(img), "image/jpeg")}, data={"collection": "photos", "k": "2"}
    )
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    rec = client.get(f"/v1/collections/photos/images/{top['id']}")
    assert rec.status_code == 200 and rec.json()["sha256"]
    thumb = client.get(f"/v1/collections/photos/images/{top['id']}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
    orig = client.get(f"/v1/collections/photos/images/{top['id']}/file")
    assert orig.status_code == 200 and len(orig.content) == rec.json()["bytes"]
    cols = client.get("/v1/collections").json()["collections"]
    assert [(c["name"], c["count"]) for c in cols] == [("photos", 12)]
    assert client.get("/v1/collections/photos").json()["kind"] == "images"


def test_caption_upload(client):
    r = client.post("/v1/captions", files={"file": ("x.png", _png(make_image(1)), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["caption"]


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("truncated", 422),
        ("png_as_jpeg", 415),
        ("huge_pixels", 422),
        ("too_big", 413),
        ("not_image", 415),
        ("unknown_collection", 404),
        ("bad_name", 422),
    ],
)
def test_bad_uploads_and_names(client, case, status):
    data, name, ctype, coll = _jpeg(make_image(2)), "q.jpg", "image/jpeg", "photos"
    if case == "truncated":
        data = data[: len(data) // 2]
    elif case == "png_as_jpeg":
        data = _png(make_image(2))
    elif case == "huge_pixels":
        data, name, ctype = _png(Image.new("1", (20_000, 20_000))), "big.png", "image/png"
    elif case == "too_big":
        data = data + b"\0" * 300_000
    elif case == "not_image":
        data, name, ctype = b"hello world", "x.txt", "text/plain"
    elif case == "unknown_collection":
        coll = "nope"
    elif case == "bad_name":
        coll = "../etc"
    r = client.post("/v1/search/image", files={"file": (name, data, ctype)}, data={"collection": coll})
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == status
    _ok_health(client)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"query": "x", "collection": "photos", "k": 0}, 422),
        ({"query": "x", "collection": "photos", "k": 10**6}, 422),
        ({"query": "", "collection": "photos"}, 422),
        ({"query": "x" * 5000, "collection": "photos"}, 422),
        ({"query": "x", "collection": "nope"}, 404),
        ({"query": 5, "collection": "photos"}, 422),
        ({"collection": "photos"}, 422),
    ],
)
def test_bad_text_queries(client, body, status):
    r = client.post("/v1/search/text", json=body)
    assert r.status_code == status, r.text
    _ok_health(client)


def test_unknown_ids(client):
    assert client.get("/v1/collections/photos/images/99999").status_code == 404
    assert client.get("/v1/collections/photos/images/abc").status_code == 422
    assert client.get("/v1/collections/nope/images/1").status_code == 404
    assert client.get("/readyz").json()["status"] == "ready"
    assert client.get("/openapi.json").status_code == 200


def test_more_like_this_and_page(client):
    r = client.post("/v1/search/similar", json={"collection": "photos", "id": 3, "k": 4})
    assert r.status_code == 200, r.text
    ids = [x["id"] for x in r.json()["results"]]
    assert len(ids) == 4 and 3 not in ids
    assert client.post("/v1/search/similar", json={"collection": "photos", "id": 999, "k": 4}).status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and "<title>blipsearch</title>" in page.text
    # The page's ES modules are served as JavaScript, and everything they import is there too.
    import re

    seen, todo = set(), ["main.js"]
    while todo:
        name = todo.pop()
        js = client.get(f"/static/js/{name}")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"], name
        seen.add(name)
        todo += [m for m in re.findall(r'from "\./([a-z]+\.js)"', js.text) if m not in seen]
    assert {"main.js", "api.js", "search.js", "filters.js", "detail.js", "upload.js", "jobs.js", "review.js"} <= seen
    # Nothing inline that a strict Content-Security-Policy would refuse.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)
    assert not re.search(r"\sstyle=|\son[a-z]+=|<style", page.text)


def test_filters_over_http(client):
    body = {
        "query": "a red square",
        "collection": "photos",
        "k": 5,
        "filters": {"fields": {"format": "JPEG"}},
        "sort": "added_at",
        "min_score": -1.0,
    }
    r = client.post("/v1/search/text", json=body)
    assert r.status_code == 200 and len(r.json()["results"]) == 5
    none = client.post("/v1/search/text", json={**body, "filters": {"uri_prefix": "/nowhere/"}})
    assert none.status_code == 200 and none.json()["results"] == []
    assert client.post("/v1/search/text", json={**body, "filters": {"bogus": 1}}).status_code == 422
    assert none.json()["empty_reason"] == "no record matches uri_prefix=/nowhere/"
    # A field that is neither a column nor a metadata key of the collection could only match nothing: refused.
    nope = client.post("/v1/search/text", json={**body, "filters": {"fields": {"nope": 1}}})
    assert nope.status_code == 422 and "'nope'" in nope.text and "format" in nope.text
    img = _jpeg(make_image(5))
    bad = client.post(
        "/v1/search/image",
        files={"file": ("q.jpg", img, "image/jpeg")},
        data={"collection": "photos", "filters": "{not json"},
    )
    assert bad.status_code == 422
    ok = client.post(
        "/v1/search/image",
        files={"file": ("q.jpg", img, "image/jpeg")},
        data={"collection": "photos", "k": "3", "filters": '{"min_width": 100}'},
    )
    assert ok.status_code == 200 and all(
        client.get(f"/v1/collections/photos/images/{x['id']}").json()["width"] >= 100 for x in ok.json()["results"]
    )
