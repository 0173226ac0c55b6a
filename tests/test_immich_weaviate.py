"""Immich's machine-learning API and Weaviate's multi2vec-clip inference API on a live server,
with requests built exactly as their callers build them:

* Immich's server (``server/src/repositories/machine-learning.repository.ts``): a FormData with
  ``entries`` = ``JSON.stringify(config)`` and the file appended as a bare Blob (undici sends it
  as ``filename="blob"``, ``application/octet-stream``), or the ``text`` field;
* Weaviate's Go client (``modules/multi2vec-clip/clients/vectorizer.go``): ``json.Marshal`` of
  ``{"texts", "images"}`` (nil slices as ``null``), POSTed with no Content-Type.

Vectors are compared with /v1/embed on the same model."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests

from blipsearch.config import Settings
from service.indexing import index_paths
from tests.helpers import write_images
from tests.live_server import image_size, png_bytes, serve


@pytest.fixture(scope="module")
def live(tmp_path_factory, blip_embedder, tiny_models):
    root = tmp_path_factory.mktemp("peers")
    model = str(tiny_models["blip-itm"])
    settings = Settings(
        data_dir=root / "data",
        model=model,
        max_upload_bytes=200_000,
        embed_max_items=8,
        immich_models={"ViT-B-32__openai": model},
        weaviate_model="photos",
    )
    write_images(root / "imgs", 3)
    index_paths(settings, [root / "imgs"], "photos", embedder=blip_embedder, progress=False)
    with serve(settings) as base:
        yield {"base": base, "model": model}


def _embed(base: str, **kw) -> np.ndarray:
    r = requests.post(f"{base}/v1/embed", timeout=60, **kw)
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["embeddings"], np.float32)


def _immich(base: str, entries: dict, image: bytes | None = None, text: str | None = None) -> requests.Response:
    files = {"entries": (None, json.dumps(entries))}
    if image is not None:
        files["image"] = ("blob", image, "application/octet-stream")  # type: ignore[assignment]
    if text is not None:
        files["text"] = (None, text)  # type: ignore[assignment]
    return requests.post(f"{base}/predict", files=files, timeout=60)


def test_immich_ping_and_smart_search_embeddings(live):
    base = live["base"]
    ping = requests.get(f"{base}/ping", timeout=10)
    assert ping.status_code == 200 and ping.text == "pong"
    png = png_bytes(4, (80, 60))
    visual = _immich(base, {"clip": {"visual": {"modelName": "ViT-B-32__openai"}}}, image=png)
    assert visual.status_code == 200, visual.text
    body = visual.json()
    assert isinstance(body["clip"], str)  # the embedding as a JSON-array string, as Immich stores it
    assert (body["imageWidth"], body["imageHeight"]) == image_size(png) == (80, 60)
    want = _embed(base, files=[("files", ("a.png", png, "image/png"))], data={"model": live["model"]})
    np.testing.assert_allclose(json.loads(body["clip"]), want[0], atol=1e-5)
    entries = {"clip": {"textual": {"modelName": "photos", "options": {"language": "en-US"}}}}
    textual = _immich(base, entries, text="a red square")
    assert textual.status_code == 200, textual.text
    assert set(textual.json()) == {"clip"}
    want_t = _embed(base, json={"texts": ["a red square"], "model": live["model"]})
    np.testing.assert_allclose(json.loads(textual.json()["clip"]), want_t[0], atol=1e-6)


def test_immich_other_tasks_and_hostile_requests(live):
    base = live["base"]
    png = png_bytes(1)
    faces = {
        "facial-recognition": {
            "detection": {"modelName": "buffalo_l", "options": {"minScore": 0.7}},
            "recognition": {"modelName": "buffalo_l"},
        }
    }
    r = _immich(base, faces, image=png)
    assert r.status_code == 422 and "facial-recognition" in r.json()["detail"]
    ocr = {"ocr": {"detection": {"modelName": "PP-OCRv5_mobile"}, "recognition": {"modelName": "PP-OCRv5_mobile"}}}
    assert _immich(base, ocr, image=png).status_code == 422
    unknown = _immich(base, {"clip": {"visual": {"modelName": "ViT-H-14__laion"}}}, image=png)
    assert unknown.status_code == 422 and "BLIPSEARCH_IMMICH_MODELS" in unknown.json()["detail"]
    bad_json = requests.post(f"{base}/predict", files={"entries": (None, "{not json"), "text": (None, "x")}, timeout=30)
    assert bad_json.status_code == 422 and set(bad_json.json()) == {"detail"}
    no_input = _immich(base, {"clip": {"textual": {"modelName": "photos"}}})
    assert no_input.status_code == 400
    visual_text = _immich(base, {"clip": {"visual": {"modelName": "photos"}}}, text="x")
    assert visual_text.status_code == 422
    junk = _immich(base, {"clip": {"visual": {"modelName": "photos"}}}, image=b"not an image")
    assert junk.status_code == 415 and set(junk.json()) == {"detail"}
    big = _immich(base, {"clip": {"visual": {"modelName": "photos"}}}, image=b"\x89PNG" + bytes(300_000))
    assert big.status_code == 413 and set(big.json()) == {"detail"}
    huge_entries = _immich(base, {"clip": {"textual": {"modelName": "x" * 100_000}}}, text="x")
    assert huge_entries.status_code == 422


def _weaviate(base: str, texts: list[str] | None, images: list[str] | None) -> requests.Response:
    body = json.dumps({"texts": texts, "images": images}, separators=(",", ":")).encode()
    return requests.post(f"{base}/vectorize", data=body, timeout=60)  # no Content-Type, as Go's client


def test_weaviate_probes_meta_and_vectorize(live):
    base = live["base"]
    for probe in ("/.well-known/live", "/.well-known/ready"):
        r = requests.get(base + probe, timeout=10)
        assert r.status_code == 204 and r.content == b""
    meta = requests.get(f"{base}/meta", timeout=30)
    assert meta.status_code == 200 and isinstance(meta.json(), dict) and meta.json()["dim"] == 256
    pngs = [png_bytes(2), png_bytes(6, (50, 90))]
    r = _weaviate(base, ["a blue circle", "Boeing 737"], [base64.b64encode(p).decode() for p in pngs])
    assert r.status_code == 200, r.text
    out = r.json()
    np.testing.assert_allclose(
        out["textVectors"], _embed(base, json={"texts": ["a blue circle", "Boeing 737"], "model": live["model"]}),
        atol=1e-6,
    )  # fmt: skip
    files = [("files", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs)]
    np.testing.assert_allclose(out["imageVectors"], _embed(base, files=files, data={"model": live["model"]}), atol=1e-5)
    only_images = _weaviate(base, None, [base64.b64encode(pngs[0]).decode()]).json()
    assert only_images["textVectors"] == [] and len(only_images["imageVectors"]) == 1
    only_texts = _weaviate(base, ["x"], None).json()
    assert len(only_texts["textVectors"]) == 1 and only_texts["imageVectors"] == []


def test_weaviate_hostile_requests_answer_its_error_shape(live):
    base = live["base"]
    for texts, images, status in [
        (["x"] * 9, None, 400),  # over BLIPSEARCH_EMBED_MAX_ITEMS
        ([""], None, 400),
        ([1, 2], None, 400),
        (None, ["%%%not base64%%%"], 400),
        (None, ["http://example.com/a.png"], 400),  # never fetched
        (None, [base64.b64encode(b"\x89PNG" + bytes(300_000)).decode()], 413),
        (None, [base64.b64encode(b"just text").decode()], 415),
    ]:
        r = _weaviate(base, texts, images)  # type: ignore[arg-type]
        assert r.status_code == status, (texts and texts[:1], r.text)
        assert set(r.json()) == {"error"} and r.json()["error"]
    r = requests.post(f"{base}/vectorize", data=b"[1,2]", timeout=30)
    assert r.status_code == 400 and set(r.json()) == {"error"}
    r = requests.post(f"{base}/vectorize", data=b"x" * 5_000_000, timeout=30)
    assert r.status_code == 413 and set(r.json()) == {"error"}  # the guard's refusal, in Weaviate's shape


def test_protocols_switch_off(tmp_path, tiny_models):
    from fastapi.testclient import TestClient

    from api.app import create_app

    off = Settings(data_dir=tmp_path / "d", model=str(tiny_models["blip-itm"]), immich_api=False, weaviate_api=False)
    with TestClient(create_app(off)) as c:
        assert c.get("/ping").status_code == 404
        assert c.post("/vectorize", json={"texts": ["x"]}).status_code == 404
        assert c.get("/.well-known/ready").status_code == 404
        assert c.get("/healthz").status_code == 200


def test_key_rules_answer_in_each_protocols_shape(tmp_path, tiny_models):
    from fastapi.testclient import TestClient

    from api.app import create_app

    keyed = Settings(data_dir=tmp_path / "k", model=str(tiny_models["blip-itm"]), read_access="key")
    with TestClient(create_app(keyed)) as c:
        assert c.get("/ping").text == "pong" and c.get("/.well-known/ready").status_code == 204  # probes: no key
        r = c.post("/predict", files={"entries": (None, "{}"), "text": (None, "x")})
        assert r.status_code == 401 and set(r.json()) == {"detail"} and r.headers["www-authenticate"] == "Bearer"
        r = c.post("/vectorize", json={"texts": ["x"]}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and set(r.json()) == {"error"}
        assert c.get("/meta").status_code == 401
