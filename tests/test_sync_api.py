"""``POST /v1/jobs/sync`` inside the import roots, and the duplicates and stacks routes."""

from __future__ import annotations

import shutil
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from blipsearch.config import Settings
from storage.api_keys import create_key
from storage.catalog import open_catalog
from tests.helpers import write_images


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("syncapi")
    write_images(root / "imports" / "lib", 4)
    settings = Settings(data_dir=root / "data", model=str(tiny_models["blip-itm"]), import_roots=[root / "imports"])
    keys = {s: create_key(open_catalog(settings.catalog_url()), f"t-{s}", s)[0] for s in ("read", "write")}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, {s: {"Authorization": f"Bearer {k}"} for s, k in keys.items()}, root


def _wait(client, job_id: str, h) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=h).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_sync_job_makes_the_collection_equal_to_the_folder(env):
    client, h, root = env
    lib = root / "imports" / "lib"
    body = {"collection": "lib", "paths": [str(lib)]}
    assert client.post("/v1/jobs/sync", json=body).status_code == 401
    job = _wait(client, client.post("/v1/jobs/sync", json=body, headers=h["write"]).json()["id"], h["read"])
    assert job["state"] == "succeeded" and job["kind"] == "sync" and job["counts"]["added"] == 4, job
    first = sorted(lib.iterdir())[0]
    first.rename(lib / "renamed.jpg")
    shutil.copy(lib / "renamed.jpg", lib / "copy.jpg")
    job = _wait(client, client.post("/v1/jobs/sync", json=body, headers=h["write"]).json()["id"], h["read"])
    assert job["counts"]["moved"] == 1 and job["counts"]["added"] == 0 and job["counts"]["copies"] == 1, job
    out = client.get("/v1/collections/lib/duplicates", headers=h["read"]).json()
    exact = [g for g in out["groups"] if g["tier"] == "exact"]
    assert len(exact) == 1 and {m["path"] for m in exact[0]["members"]} == {"lib/renamed.jpg", "lib/copy.jpg"}
    assert str(root) not in str(out)  # server paths are not shown


@pytest.mark.parametrize(
    "body,status",
    [
        ({"collection": "lib", "paths": ["/etc"]}, 403),
        ({"collection": "lib", "paths": ["https://example.org/x"]}, 422),
        ({"collection": "lib", "paths": []}, 422),
        ({"collection": "../x", "paths": ["."]}, 422),
    ],
)
def test_sync_job_refuses_paths_outside_the_roots(env, body, status):
    client, h, _ = env
    assert client.post("/v1/jobs/sync", json=body, headers=h["write"]).status_code == status


def test_sync_job_refuses_a_file_and_a_symlinked_folder(env):
    client, h, root = env
    (root / "imports" / "f.jpg").write_bytes(b"x")
    (root / "imports" / "link").symlink_to(root / "imports" / "lib")
    for p in ("f.jpg", "link"):
        r = client.post(
            "/v1/jobs/sync", json={"collection": "lib", "paths": [str(root / "imports" / p)]}, headers=h["write"]
        )
        assert r.status_code == 422 and ("not a folder" in r.text or "is a symlink" in r.text), r.text


def test_stack_routes(env):
    client, h, _ = env
    r = client.post("/v1/collections/lib/stacks", json={"keeper": 0, "members": [1]}, headers=h["write"])
    assert r.status_code == 200 and r.json()["members"] == [1], r.text
    assert client.get("/v1/collections/lib/stacks/1", headers=h["read"]).json()["keeper"] == 0
    hits = client.post("/v1/search/text", json={"query": "x", "collection": "lib", "k": 10}, headers=h["read"]).json()
    assert 1 not in [x["id"] for x in hits["results"]] and 0 in [x["id"] for x in hits["results"]]
    assert client.post("/v1/collections/lib/stacks", json={"keeper": 0}, headers=h["write"]).status_code == 422
    assert (
        client.post("/v1/collections/lib/stacks", json={"keeper": 0, "members": [99]}, headers=h["write"]).status_code
        == 404
    )
    assert client.delete("/v1/collections/lib/stacks?keeper=0", headers=h["read"]).status_code == 403
    assert client.delete("/v1/collections/lib/stacks?keeper=0", headers=h["write"]).status_code == 200
    assert client.delete("/v1/collections/lib/stacks?keeper=0", headers=h["write"]).status_code == 404
    assert client.get("/v1/collections/lib/duplicates?tier=bogus", headers=h["read"]).status_code == 422
