"""The API parts the page's first run stands on: browsing without a query, GET /v1/info (the
collection-name rule the form uses), GET /v1/keys/me, the random-model mark, and /docs and
/redoc served from the server's own assets under a policy that allows nothing from elsewhere."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from blipsearch.config import Settings
from service.indexing import index_paths
from storage.layout import name_pattern, validate_name
from tests.helpers import write_images


@pytest.fixture(scope="module")
def api(tmp_path_factory, blip_embedder, tiny_models):
    from api.app import create_app
    from storage.api_keys import create_key, revoke_key
    from storage.catalog import open_catalog

    root = tmp_path_factory.mktemp("page_api")
    settings = Settings(data_dir=root / "data", batch_size=8, model=str(tiny_models["blip-itm"]))
    write_images(root / "imgs", 7)
    index_paths(settings, [root / "imgs"], "photos", embedder=blip_embedder, progress=False)
    catalog = open_catalog(settings.catalog_url())
    key = create_key(catalog, "tester", "write")[0]
    gone, info = create_key(catalog, "gone", "read")
    revoke_key(catalog, info.id)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield {"client": c, "key": key, "revoked": gone, "catalog": catalog}


def test_browse_pages_newest_first_with_filters_and_moderation(api):
    c = api["client"]
    first = c.get("/v1/collections/photos/images", params={"limit": 3}).json()
    assert first["total"] == 7 and first["next_offset"] == 3 and first["sort"] == "newest"
    rest = c.get("/v1/collections/photos/images", params={"limit": 10, "offset": 3}).json()
    ids = [r["id"] for r in first["results"] + rest["results"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 7 and rest["next_offset"] is None
    oldest = c.get("/v1/collections/photos/images", params={"sort": "oldest", "limit": 2}).json()
    assert [r["id"] for r in oldest["results"]] == sorted(ids)[:2]
    wide = c.get("/v1/collections/photos/images", params={"filters": '{"min_width": 100}'}).json()
    assert 0 < wide["total"] < 7 and all(r["width"] >= 100 for r in wide["results"])
    # A blocked record is hidden as in a search.
    from moderation.store import save_manual

    save_manual(api["catalog"], "photos", ids[0], "block", "test")
    after = c.get("/v1/collections/photos/images").json()
    assert after["total"] == 6 and ids[0] not in [r["id"] for r in after["results"]]


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1001}, {"offset": -1}, {"sort": "random"}, {"filters": "{bad"}, {"filters": '{"x": 1}'}],
)
def test_browse_refuses_bad_input(api, params):
    r = api["client"].get("/v1/collections/photos/images", params=params)
    assert r.status_code == 422, r.text


def test_browse_unknown_collection_is_404(api):
    assert api["client"].get("/v1/collections/nope/images").status_code == 404


def test_info_name_rule_matches_the_server():
    pattern = name_pattern()
    for name in ["photos", "a", "my-coll_1.2", "x" * 64, "uploads", "UPLOADS", "catalog.db", "thumbs", "a..b",
                 "x.json", "x-wal", ".hidden", "-x", "x" * 65, "trash", "Tmp", "ok.jsonx"]:  # fmt: skip
        try:
            validate_name(name)
            allowed = True
        except Exception:
            allowed = False
        assert bool(re.fullmatch(pattern, name)) == allowed, name


def test_info_and_collection_fields(api):
    c = api["client"]
    info = c.get("/v1/info").json()
    assert info["collection_name_pattern"] == name_pattern() and info["import_roots"] is False
    coll = c.get("/v1/collections").json()["collections"][0]
    assert coll["random_model"] is True and coll["updated_at"] >= coll["created_at"]


def test_keys_me(api):
    c = api["client"]
    me = c.get("/v1/keys/me", headers={"Authorization": f"Bearer {api['key']}"})
    assert me.status_code == 200 and me.json()["name"] == "tester" and me.json()["scope"] == "write"
    assert "key_hash" not in me.text and api["key"] not in me.text
    assert c.get("/v1/keys/me").status_code == 401
    assert c.get("/v1/keys/me", headers={"Authorization": "Bearer bsk_no_such"}).status_code == 401
    assert c.get("/v1/keys/me", headers={"Authorization": f"Bearer {api['revoked']}"}).status_code in (401, 403)


def test_docs_are_served_locally(api):
    c = api["client"]
    for page, asset in (("/docs", "/static-docs/swagger-ui-bundle.js"), ("/redoc", "/static-docs/redoc.standalone.js")):
        r = c.get(page)
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "http" not in csp
        assert "http://" not in r.text and "https://" not in r.text and "<script>" not in r.text
        assert asset in r.text and c.get(asset).status_code == 200
    assert c.get("/static-docs/swagger-ui.css").status_code == 200


def test_test_models_are_marked(tiny_models):
    from models.test_checkpoints import is_random_model

    assert all(is_random_model(str(p)) for p in tiny_models.values())
    assert not is_random_model("Salesforce/blip-itm-base-coco") and not is_random_model(None)
