"""POST /v1/embed and ``blipsearch embed``: the vectors search itself queries with."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from api.app import create_app
from blipsearch.config import Settings
from cli.main import app as cli_app
from service.indexing import index_paths
from tests.helpers import make_image, write_images

TEXTS = ["a red square", "a blue circle on a dark background", "stripes"]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def served(tmp_path_factory, blip_embedder, tiny_models):
    root = tmp_path_factory.mktemp("embed")
    settings = Settings(
        data_dir=root / "data",
        model=str(tiny_models["blip-itm"]),
        allowed_models=[str(tiny_models["blip2-itm"])],
        batch_size=8,
        max_upload_bytes=200_000,
        max_image_pixels=10_000_000,
        embed_max_items=6,
        microbatch_wait_ms=50,
    )
    write_images(root / "imgs", 6)
    index_paths(settings, [root / "imgs"], "photos", embedder=blip_embedder, progress=False)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, app.state.blip, settings


def test_text_vectors_equal_search_query_vectors(served):
    client, state, _ = served
    r = client.post("/v1/embed", json={"texts": TEXTS, "collection": "photos"})
    assert r.status_code == 200, r.text
    body = r.json()
    engine = state.engine("photos")
    # a model in a local folder is named by the folder (no server path in the answer)
    assert body["model"] == Path(engine.embedder.model_id).name and body["vectors_per_item"] == 1
    vecs = np.asarray(body["embeddings"], dtype=np.float32)
    assert vecs.shape == (len(TEXTS), body["dim"]) and body["dim"] == engine.coll.manifest.dim
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    for text, v in zip(TEXTS, vecs, strict=True):
        assert _cos(v, engine.encode_text(text)) >= 1 - 1e-6  # the query vector search_text uses
        assert _cos(v, engine.embedder.embed_texts([text])[0]) >= 1 - 1e-6
    # without a collection: BLIPSEARCH_MODEL, the same model here
    default = client.post("/v1/embed", json={"texts": TEXTS[:1]}).json()
    assert _cos(default["embeddings"][0], vecs[0]) >= 1 - 1e-6


def test_image_vectors_equal_search_query_vectors_in_order(served):
    client, state, _ = served
    imgs = [make_image(i, (90 + 10 * i, 70)) for i in (3, 1, 4)]
    files = [("files", (f"{i}.png", _png(img), "image/png")) for i, img in enumerate(imgs)]
    sizes: list[int] = []
    observe, state.on_batch = state.on_batch, lambda model, kind, n: sizes.append(n) if kind == "image" else None
    try:
        r = client.post("/v1/embed", files=files, data={"collection": "photos"})
    finally:
        state.on_batch = observe
    assert r.status_code == 200, r.text
    body = r.json()
    vecs = np.asarray(body["embeddings"], dtype=np.float32)
    engine = state.engine("photos")
    assert vecs.shape == (3, engine.coll.manifest.dim) and body["vectors_per_item"] == 1
    for img, v in zip(imgs, vecs, strict=True):  # exactly how search_image encodes its query
        q = engine.embedder.embed_pixels(engine.embedder.preprocess([img]))[0]
        assert _cos(v, q) >= 1 - 1e-6
    assert sum(sizes) == 3 and len(sizes) < 3  # the request's images shared forward passes


def test_blip2_images_give_32_vectors_each(served, tiny_models):
    client, state, _ = served
    model = str(tiny_models["blip2-itm"])
    imgs = [make_image(i) for i in (0, 5)]
    files = [("files", (f"{i}.png", _png(img), "image/png")) for i, img in enumerate(imgs)]
    r = client.post("/v1/embed", files=files, data={"model": model})
    assert r.status_code == 200, r.text
    body = r.json()
    embedder = state.embedder(model)
    assert body["vectors_per_item"] == embedder.vectors_per_image == 32
    vecs = np.asarray(body["embeddings"], dtype=np.float32)
    assert vecs.shape == (2, 32, body["dim"])
    assert np.allclose(np.linalg.norm(vecs, axis=2), 1.0, atol=1e-5)
    for img, v in zip(imgs, vecs, strict=True):
        q = embedder.embed_pixels(embedder.preprocess([img]))[0]
        assert min(_cos(a, b) for a, b in zip(v, q, strict=True)) >= 1 - 1e-6
    texts = client.post("/v1/embed", json={"texts": ["a cat"], "model": model}).json()
    assert texts["vectors_per_item"] == 1 and np.asarray(texts["embeddings"]).shape == (1, body["dim"])


def test_without_microbatching_the_vectors_are_the_same(served):
    client, _, settings = served
    plain = create_app(settings.model_copy(update={"microbatch": False}))
    with TestClient(plain) as c2:
        files = [("files", ("a.png", _png(make_image(6)), "image/png"))]
        for kw in ({"json": {"texts": TEXTS}}, {"files": files}):
            a = client.post("/v1/embed", **kw).json()["embeddings"]
            b = c2.post("/v1/embed", **kw).json()["embeddings"]
            assert len(a) == len(b) and all(_cos(x, y) >= 1 - 1e-6 for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("too_many_texts", 422),
        ("too_many_files", 422),
        ("empty_text", 422),
        ("no_items", 422),
        ("texts_and_files", 422),
        ("unknown_field", 422),
        ("not_allowed_model", 403),
        ("model_differs_from_collection", 422),
        ("unknown_collection", 404),
        ("big_image", 413),
        ("big_json", 413),
        ("not_image", 415),
        ("malformed_json", 422),
    ],
)
def test_bad_embed_requests_answer_4xx(served, case, status):
    client = served[0]
    png = _png(make_image(1))
    kw: dict = {}
    if case == "too_many_texts":
        kw = {"json": {"texts": ["x"] * 7}}
    elif case == "too_many_files":
        kw = {"files": [("files", (f"{i}.png", png, "image/png")) for i in range(7)]}
    elif case == "empty_text":
        kw = {"json": {"texts": ["ok", "  "]}}
    elif case == "no_items":
        kw = {"json": {"texts": []}}
    elif case == "texts_and_files":
        kw = {"files": [("files", ("a.png", png, "image/png"))], "data": {"texts": "hello"}}
    elif case == "unknown_field":
        kw = {"json": {"texts": ["x"], "colection": "photos"}}
    elif case == "not_allowed_model":
        kw = {"json": {"texts": ["x"], "model": "Salesforce/blip-itm-large-coco"}}
    elif case == "model_differs_from_collection":
        kw = {"json": {"texts": ["x"], "collection": "photos", "model": "other"}}
    elif case == "unknown_collection":
        kw = {"json": {"texts": ["x"], "collection": "nope"}}
    elif case == "big_image":
        kw = {"files": [("files", ("a.png", png + b"\0" * 300_000, "image/png"))]}
    elif case == "big_json":
        kw = {"content": json.dumps({"texts": ["x" * 300_000]}), "headers": {"Content-Type": "application/json"}}
    elif case == "not_image":
        kw = {"files": [("files", ("a.txt", b"hello", "text/plain"))]}
    elif case == "malformed_json":
        kw = {"content": b"{nope", "headers": {"Content-Type": "application/json"}}
    r = client.post("/v1/embed", **kw)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


def test_cli_embed_json_and_npy(served, tmp_path):
    client, _, settings = served
    runner = CliRunner()
    env = {"BLIPSEARCH_DATA_DIR": str(settings.data_dir), "BLIPSEARCH_MODEL": settings.model}
    res = runner.invoke(cli_app, ["embed", "--text", TEXTS[0], "--text", TEXTS[1], "-c", "photos"], env=env)
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    api = client.post("/v1/embed", json={"texts": TEXTS[:2], "collection": "photos"}).json()
    assert Path(body["model"]).name == api["model"] and body["dim"] == api["dim"] and body["vectors_per_item"] == 1
    for a, b in zip(body["embeddings"], api["embeddings"], strict=True):
        assert _cos(a, b) >= 1 - 1e-6
    img = tmp_path / "q.png"
    make_image(2).save(img)
    out = tmp_path / "v.npy"
    res = runner.invoke(
        cli_app, ["embed", "--image", str(img), "--image", str(img), "--format", "npy", "-o", str(out)], env=env
    )
    assert res.exit_code == 0, res.output
    arr = np.load(out)
    assert arr.dtype == np.float32 and arr.shape == (2, api["dim"])
    files = [("files", ("q.png", img.read_bytes(), "image/png"))]
    api_img = client.post("/v1/embed", files=files).json()["embeddings"][0]
    assert _cos(arr[0], api_img) >= 1 - 1e-6 and _cos(arr[1], api_img) >= 1 - 1e-6
    bad = runner.invoke(cli_app, ["embed", "--text", "x", "--image", str(img)], env=env)
    assert bad.exit_code == 2 and "not both" in bad.output
    bad = runner.invoke(cli_app, ["embed", "--text", "x", "--format", "csv"], env=env)
    assert bad.exit_code == 2
