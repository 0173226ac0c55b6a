"""Cheap checks (names, sizes, types, allow-lists, auth) come before any model load, on every
write and search route: with a model that cannot load (its folder is gone, offline), a bad
request still answers its 4xx, never the 503 of the model load."""

from __future__ import annotations

import base64
import io
import shutil

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from blipsearch.config import Settings
from models import load_embedder
from service.indexing import index_paths
from storage.api_keys import create_key
from storage.catalog import open_catalog
from tests.helpers import make_image, write_images

JUNK = b"this is not an image at all" * 10
_buf = io.BytesIO()
make_image(5).save(_buf, "PNG")
PNG = _buf.getvalue()


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("order")
    model = root / "model"
    shutil.copytree(tiny_models["blip-itm"], model)
    (root / "imports").mkdir()
    (root / "policies").mkdir()
    settings = Settings(
        data_dir=root / "data",
        model=str(model),
        batch_size=4,
        import_roots=[root / "imports"],
        policy_dir=root / "policies",
        caption_model=str(model),
    )
    embedder = load_embedder(str(model), device="cpu", batch_size=4, precision="exact")
    index_paths(settings, write_images(root / "imgs", 2), "c", embedder=embedder, progress=False)
    shutil.rmtree(model)  # from now on the model cannot load
    key = create_key(open_catalog(settings.catalog_url()), "order", "admin")[0]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


def _junk(name: str = "x.png") -> tuple[str, bytes, str]:
    return (name, JUNK, "image/png")


BAD_REQUESTS = {
    "create: reserved name": ("post", "/v1/collections", {"json": {"name": "catalog.db"}}, 422),
    "create: model not allowed": ("post", "/v1/collections", {"json": {"name": "n2", "model": "/elsewhere/m"}}, 403),
    "upload: unknown collection": ("post", "/v1/collections/nope/images", {"files": [("files", _junk())]}, 404),
    "upload: too many files": ("post", "/v1/collections/c/images", {"files": [("files", _junk())] * 200}, 422),
    "delete image: unknown record": ("delete", "/v1/collections/c/images/999", {}, 404),
    "text: unknown collection": ("post", "/v1/search/text", {"json": {"collection": "nope", "query": "x"}}, 404),
    "text: bad k": ("post", "/v1/search/text", {"json": {"collection": "c", "query": "x", "k": 0}}, 422),
    "text: rerank model not allowed": (
        "post",
        "/v1/search/text",
        {"json": {"collection": "c", "query": "x", "rerank": True, "rerank_model": "evil/model"}},
        422,
    ),
    "image: not an image": ("post", "/v1/search/image", {"files": {"file": _junk()}, "data": {"collection": "c"}}, 415),
    "image: rerank model not allowed": (
        "post",
        "/v1/search/image",
        {"files": {"file": ("q.png", PNG, "image/png")}, "data": {"collection": "c", "rerank_model": "evil/model"}},
        422,
    ),
    "similar: unknown collection": ("post", "/v1/search/similar", {"json": {"collection": "nope", "id": 0}}, 404),
    "embed: empty texts": ("post", "/v1/embed", {"json": {"texts": []}}, 422),
    "embed: model not allowed": ("post", "/v1/embed", {"json": {"texts": ["a"], "model": "evil/model"}}, 403),
    "embed: not an image": ("post", "/v1/embed", {"files": [("files", _junk())]}, 415),
    "moderation: not an image": (
        "post",
        "/v1/moderation/check",
        {"files": {"file": _junk()}, "data": {"policy": "nope"}},
        415,
    ),
    "captions: not an image": ("post", "/v1/captions", {"files": {"file": _junk()}}, 415),
    "moderation: unknown policy": (
        "post",
        "/v1/moderation/check",
        {"files": {"file": ("q.png", PNG, "image/png")}, "data": {"policy": "nope"}},
        404,
    ),
    "jobs: bad collection name": ("post", "/v1/jobs/index", {"json": {"collection": "../x", "paths": ["/tmp"]}}, 422),
    "jobs: outside import roots": ("post", "/v1/jobs/index", {"json": {"collection": "j", "paths": ["/etc"]}}, 403),
    "knn-service: not an image": (
        "post",
        "/knn-service",
        {"json": {"image": base64.b64encode(JUNK).decode(), "indice_name": "c"}},
        415,
    ),
    "openai embeddings: unknown model": ("post", "/v1/embeddings", {"json": {"input": "a", "model": "evil"}}, 404),
}


def test_the_model_cannot_load(env):
    """The premise: a well-formed request that needs the model answers 503."""
    r = env.post("/v1/search/text", json={"collection": "c", "query": "a red square"})
    assert r.status_code == 503, r.text


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_answer_4xx_before_any_model_load(env, case):
    method, url, kwargs, status = BAD_REQUESTS[case]
    r = getattr(env, method)(url, **kwargs)
    assert r.status_code == status, (case, r.status_code, r.text[:300])


def test_upload_of_only_bad_files_reports_them_without_the_model(env):
    r = env.post("/v1/collections/c/images", files=[("files", _junk("a.png")), ("files", _junk("b.jpg"))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ids"] == [] and len(body["failures"]) == 2
