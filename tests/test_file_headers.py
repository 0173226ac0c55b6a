"""/file takes its Content-Type from the stored decoded format only, never
from the file name; nosniff everywhere, attachment for what is not a displayable raster image,
and a restrictive Content-Security-Policy on the page and API responses."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from blipsearch.config import Settings
from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import make_image

HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"


def _encoded(seed: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    img = make_image(seed, (40, 30))
    (img.convert("P") if fmt == "GIF" else img).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("headers")
    imgs = root / "imgs"
    imgs.mkdir()
    (imgs / "poly.html").write_bytes(_encoded(1, "GIF") + HTML)  # a GIF/HTML polyglot
    (imgs / "pic.svg").write_bytes(_encoded(2, "PNG"))
    (imgs / "scan.tif").write_bytes(_encoded(3, "TIFF"))
    (imgs / "photo.jpg").write_bytes(_encoded(4, "JPEG"))
    settings = Settings(data_dir=root / "data", model=str(tiny_models["blip-itm"]), batch_size=4)
    index_paths(settings, [imgs], "c", progress=False)
    recs = Collection.open(settings.data_dir, "c").get_records(list(range(4)))
    ids = {r["uri"].rsplit("/", 1)[-1]: rid for rid, r in recs.items()}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, ids


@pytest.mark.parametrize(
    ("name", "media_type", "disposition"),
    [
        ("poly.html", "image/gif", "inline"),
        ("pic.svg", "image/png", "inline"),
        ("photo.jpg", "image/jpeg", "inline"),
        ("scan.tif", "image/tiff", "attachment"),
    ],
)
def test_file_type_comes_from_the_decoded_format(env, name, media_type, disposition):
    client, ids = env
    r = client.get(f"/v1/collections/c/images/{ids[name]}/file")
    assert r.status_code == 200
    assert r.headers["content-type"] == media_type
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"].startswith(disposition)
    csp = r.headers["content-security-policy"]
    assert "sandbox" in csp and "default-src 'none'" in csp and "script-src" not in csp


def test_page_and_api_responses_carry_a_restrictive_csp(env):
    client, ids = env
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for path in (
        "/static/js/main.js",
        "/v1/collections",
        "/v1/collections/c",
        f"/v1/collections/c/images/{ids['poly.html']}",
    ):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in r.headers["content-security-policy"]
    err = client.get("/v1/collections/nope")
    assert err.status_code == 404 and "default-src 'none'" in err.headers["content-security-policy"]
