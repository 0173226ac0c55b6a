"""A server whose model is a local directory never shows that directory's absolute path: not in
collections, jobs, embeddings, moderation, captions' model, /metrics labels or error messages."""

from __future__ import annotations

import io
import time

import pytest
import yaml
from fastapi.testclient import TestClient

from api.app import create_app
from api.paths import PathView
from blipsearch.config import Settings
from storage.api_keys import create_key
from storage.catalog import open_catalog
from tests.helpers import make_image, write_images
from tests.test_moderation import policy_dict


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("paths")
    policies = root / "policies"
    policies.mkdir()
    (policies / "shop.yaml").write_text(yaml.safe_dump(policy_dict(itm=0.0)))
    model = str(tiny_models["blip-itm"])
    settings = Settings(
        data_dir=root / "data", model=model, batch_size=4, import_roots=[root / "imports"], policy_dir=policies
    )
    write_images(root / "imports" / "a", 3)
    key = create_key(open_catalog(settings.catalog_url()), "paths", "write")[0]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client, model, root


def _png() -> bytes:
    buf = io.BytesIO()
    make_image(3).save(buf, "PNG")
    return buf.getvalue()


def _leaks(text: str, model: str) -> bool:
    return model in text or str(tiny_model_parent(model)) in text


def tiny_model_parent(model: str) -> str:
    return model.rsplit("/", 1)[0]


def test_no_response_shows_the_model_directory(env):
    client, model, root = env
    bodies: dict[str, str] = {}
    r = client.post("/v1/jobs/index", json={"collection": "c", "paths": [str(root / "imports" / "a")]})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{job_id}").json()["state"] in ("pending", "running") and time.monotonic() < deadline:
        time.sleep(0.1)
    bodies["job"] = client.get(f"/v1/jobs/{job_id}").text
    assert '"succeeded"' in bodies["job"]
    bodies["jobs"] = client.get("/v1/jobs").text
    bodies["collections"] = client.get("/v1/collections").text
    bodies["collection"] = client.get("/v1/collections/c").text
    bodies["embed_json"] = client.post("/v1/embed", json={"texts": ["a red square"]}).text
    bodies["embed_files"] = client.post("/v1/embed", files=[("files", ("a.png", _png(), "image/png"))]).text
    bodies["moderation"] = client.post(
        "/v1/moderation/check", files={"file": ("a.png", _png(), "image/png")}, data={"policy": "shop"}
    ).text
    bodies["readyz"] = client.get("/readyz").text
    bodies["metrics"] = client.get("/metrics").text
    # Refusals that name models: a model outside the allow-list (403), a collection's model
    # against another one (422).
    other = model + "-other"
    r403 = client.post("/v1/collections", json={"name": "new", "model": other})
    assert r403.status_code == 403, r403.text
    bodies["403"] = r403.text
    r422 = client.post("/v1/embed", json={"texts": ["x"], "collection": "c", "model": other})
    assert r422.status_code == 422, r422.text
    bodies["422"] = r422.text
    r403e = client.post("/v1/embed", json={"texts": ["x"], "model": other})
    assert r403e.status_code == 403, r403e.text
    bodies["403_embed"] = r403e.text

    leaked = [name for name, body in bodies.items() if _leaks(body, model)]
    assert not leaked, {n: bodies[n][:400] for n in leaked}
    # The model is still named, by its folder, where a response names it.
    name = model.rsplit("/", 1)[1]
    for key in ("job", "collections", "embed_json", "embed_files", "403", "422"):
        assert name in bodies[key], (key, bodies[key][:300])
    assert f'model="{name}"' in bodies["metrics"]


def test_path_view_keeps_urls_and_relative_text(tmp_path):
    view = PathView(Settings(data_dir=tmp_path / "d"))
    assert view.model("Salesforce/blip-itm-base-coco") == "Salesforce/blip-itm-base-coco"
    assert view.model("/srv/models/tiny") == "tiny"
    msg = "fetch https://host/a/b failed; s3://bkt/k/x; model '/srv/models/tiny' and 1/2 and/or"
    assert view.text(msg) == "fetch https://host/a/b failed; s3://bkt/k/x; model 'tiny' and 1/2 and/or"
    assert view.text(f"{tmp_path / 'd'}/collections/c/manifest.json") == "collections/c/manifest.json"
    hint = "upload files to POST /v1/collections/{name}/images, or see /readyz and /knn-service."
    assert view.text(hint) == hint  # the API's own routes are not server paths
    exposed = PathView(Settings(data_dir=tmp_path / "d", expose_paths=True))
    assert exposed.model("/srv/models/tiny") == "/srv/models/tiny"
