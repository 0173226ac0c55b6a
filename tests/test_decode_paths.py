"""Every API route that decodes uploaded bytes goes through the one guarded decode path: the
request's pixel budget (413 before any decode or model load), the decode gate, and the reduced
decode to the model's input side."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import api.decoding
from api.app import create_app
from blipsearch.config import Settings
from service.indexing import index_paths
from tests.helpers import write_images

BUDGET = 1_000_000  # pixels per request


def _png(side: int, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side), 128, np.uint8)).convert(mode).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory, blip_embedder, tiny_models):
    root = tmp_path_factory.mktemp("decode_paths")
    settings = Settings(
        data_dir=root / "data",
        model=str(tiny_models["blip-itm"]),
        batch_size=8,
        max_request_pixels=BUDGET,
        jpeg_draft=True,
        precision="fast",  # the reduced decode is part of fast
        fast_runtime="torch",
    )
    index_paths(settings, [write_images(root / "imgs", 4)[0].parent], "photos", embedder=blip_embedder, progress=False)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, app.state.blip


def _embed(client: TestClient, data: bytes):
    return client.post("/v1/embed", files=[("files", ("x.png", data, "image/png"))], data={"collection": "photos"})


def _knn(client: TestClient, data: bytes):
    return client.post("/knn-service", json={"image": base64.b64encode(data).decode(), "indice_name": "photos"})


@pytest.mark.parametrize("send", [_embed, _knn], ids=["embed", "knn-service"])
def test_request_pixel_budget_before_any_decode(served, send):
    client, state = served
    before = state.decodes.total
    r = send(client, _png(1100))  # 1.21 Mpx: over the request budget, a few KB on the wire
    assert r.status_code == 413 and "BLIPSEARCH_MAX_REQUEST_PIXELS" in r.json()["detail"]
    assert state.decodes.total == before  # refused from the header: nothing was decoded


@pytest.mark.parametrize("send", [_embed, _knn], ids=["embed", "knn-service"])
def test_uploads_decode_through_the_gate_reduced(served, send, monkeypatch):
    client, state = served
    sides: list[int | None] = []
    real = api.decoding.sniff_and_decode

    def spy(data, name, ctype, max_pixels, draft=None, timeout_s=None):
        out = real(data, name, ctype, max_pixels, draft, timeout_s)
        sides.append(draft)
        assert timeout_s == state.settings.decode_timeout_s  # under the decode time limit
        assert out.image.size[0] < 900  # box-reduced right after decoding, never handed on at full size
        return out

    monkeypatch.setattr(api.decoding, "sniff_and_decode", spy)
    before = state.decodes.total
    r = send(client, _png(900))
    assert r.status_code == 200, r.text
    assert state.decodes.total == before + 1  # through the decode gate
    assert sides == [state.engine("photos").embedder.input_size]


def test_thumbnail_of_a_large_record_decodes_reduced_through_the_gate(served, blip_embedder, tmp_path, monkeypatch):
    import media.decode
    import media.stored
    from api.routes.collections import THUMB_SIZE

    client, state = served
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "b.png").write_bytes(_png(1100, "RGB"))
    s = state.settings.model_copy(update={"max_request_pixels": 200_000_000})
    index_paths(s, [tmp_path / "big"], "big", embedder=blip_embedder, progress=False)
    calls: list[tuple] = []
    real = media.decode.decode_image

    def spy(data, max_pixels, draft=None, reduce=False):
        out = real(data, max_pixels, draft, reduce)
        calls.append((draft, reduce, out.image.size))
        return out

    monkeypatch.setattr(media.decode, "decode_image", spy)
    monkeypatch.setattr(media.stored, "decode_image", spy)  # the stored-image reader's decode
    before = state.decodes.total
    r = client.get("/v1/collections/big/images/0/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert state.decodes.total == before + 1
    assert calls and calls[0][:2] == (THUMB_SIZE, True) and max(calls[0][2]) < 1100
