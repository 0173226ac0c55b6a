"""HTTP writes and admin: API keys, collections create/delete, uploads, image deletes, jobs,
metrics, CORS."""

from __future__ import annotations

import io
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from blipsearch.config import Settings
from storage.api_keys import create_key, revoke_key
from storage.catalog import open_catalog
from tests.helpers import make_image, write_images


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("writes")
    write_images(root / "imports" / "batch", 10, start=300)
    settings = Settings(
        data_dir=root / "data",
        model=str(tiny_models["blip-itm"]),
        batch_size=4,
        max_upload_bytes=300_000,
        max_image_pixels=10_000_000,
        import_roots=[root / "imports"],
        cors_origins=["https://example.org"],
    )
    catalog = open_catalog(settings.catalog_url())
    keys = {scope: create_key(catalog, f"test-{scope}", scope)[0] for scope in ("read", "write", "admin")}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, keys, root, settings


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _healthy(client) -> None:
    assert client.get("/healthz").status_code == 200


def test_writes_need_a_key_with_the_right_scope(env):
    client, keys, _, settings = env
    body = {"name": "keyed"}
    r = client.post("/v1/collections", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "blipsearch keys create" in r.json()["detail"]
    assert client.post("/v1/collections", json=body, headers=_auth("bsk_nope_nope")).status_code == 401
    assert client.post("/v1/collections", json=body, headers=_auth("garbage")).status_code == 401
    assert client.post("/v1/collections", json=body, headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.post("/v1/collections", json=body, headers=_auth(keys["read"])).status_code == 403
    assert client.post("/v1/collections", json=body, headers=_auth(keys["write"])).status_code == 201
    assert client.delete("/v1/collections/keyed", headers=_auth(keys["write"])).status_code == 403  # admin only
    # A revoked key stops working at once.
    catalog = open_catalog(settings.catalog_url())
    key = create_key(catalog, "temp", "admin")[0]
    revoke_key(catalog, key.split("_")[1])
    r = client.delete("/v1/collections/keyed", headers=_auth(key))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert client.delete("/v1/collections/keyed", headers=_auth(keys["admin"])).status_code == 204
    assert client.get("/v1/collections/keyed").status_code == 404
    assert client.delete("/v1/collections/keyed", headers=_auth(keys["admin"])).status_code == 404
    _healthy(client)


def test_create_refuses_duplicates_bad_names_and_unlisted_models(env):
    client, keys, _, _ = env
    h = _auth(keys["write"])
    assert client.post("/v1/collections", json={"name": "dup"}, headers=h).status_code == 201
    assert client.post("/v1/collections", json={"name": "dup"}, headers=h).status_code == 409
    assert client.post("/v1/collections", json={"name": "../x"}, headers=h).status_code == 422
    assert client.post("/v1/collections", json={"name": "m", "model": "/etc"}, headers=h).status_code == 403
    empty = client.post("/v1/search/text", json={"query": "a red circle", "collection": "dup"})
    assert empty.status_code == 200 and empty.json()["results"] == []  # empty collection: no results, no error


def test_upload_then_search_then_delete(env):
    client, keys, _, _ = env
    h = _auth(keys["write"])
    assert client.post("/v1/collections", json={"name": "up"}, headers=h).status_code == 201
    imgs = [make_image(i, (120, 90)) for i in range(5)]
    files = [("files", (f"p{i}.jpg", _jpeg(im), "image/jpeg")) for i, im in enumerate(imgs)]
    files.append(("files", ("again.jpg", _jpeg(imgs[0]), "image/jpeg")))  # same bytes as p0
    truncated = _jpeg(imgs[1])[: len(_jpeg(imgs[1])) // 2]
    files.append(("files", ("bad.jpg", truncated, "image/jpeg")))
    files.append(("files", ("notes.txt", b"hello", "text/plain")))
    r = client.post("/v1/collections/up/images", files=files, headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [a["filename"] for a in out["added"]] == [f"p{i}.jpg" for i in range(5)]
    assert out["ids"] == [a["id"] for a in out["added"]] and len(set(out["ids"])) == 5
    assert [d["filename"] for d in out["duplicates"]] == ["again.jpg"]
    assert {f["filename"]: f["code"] for f in out["failures"]} == {
        "bad.jpg": "bad_image",
        "notes.txt": "unsupported_media_type",
    }
    # Uploading the same file again adds nothing.
    again = client.post("/v1/collections/up/images", files=files[:1], headers=h).json()
    assert again["ids"] == [] and len(again["duplicates"]) == 1
    # The new images are searchable at once, and the original bytes are served back.
    q = {"query": "anything", "collection": "up", "k": 10}
    ids = [x["id"] for x in client.post("/v1/search/text", json=q).json()["results"]]
    assert sorted(ids) == sorted(out["ids"])
    rid = out["added"][2]["id"]
    assert client.get(f"/v1/collections/up/images/{rid}/file").content == _jpeg(imgs[2])
    assert client.get(f"/v1/collections/up/images/{rid}/thumbnail").status_code == 200
    # Delete: 401 without a key, then gone from every search, record 404, second delete 404.
    assert client.delete(f"/v1/collections/up/images/{rid}").status_code == 401
    d = client.delete(f"/v1/collections/up/images/{rid}", headers=h)
    assert d.status_code == 200 and d.json()["deleted"] == [rid]
    ids = [x["id"] for x in client.post("/v1/search/text", json=q).json()["results"]]
    assert rid not in ids and len(ids) == 4
    img_q = client.post(
        "/v1/search/image",
        files={"file": ("q.jpg", _jpeg(imgs[2]), "image/jpeg")},
        data={"collection": "up", "k": "10"},
    )
    assert rid not in [x["id"] for x in img_q.json()["results"]]
    assert client.get(f"/v1/collections/up/images/{rid}").status_code == 404
    assert client.delete(f"/v1/collections/up/images/{rid}", headers=h).status_code == 404
    assert client.delete("/v1/collections/up/images/abc", headers=h).status_code == 422
    assert client.post("/v1/collections/nope/images", files=files[:1], headers=h).status_code == 404
    assert client.get("/v1/collections/up").json()["count"] == 4
    _healthy(client)


def test_upload_limits(env):
    client, keys, _, settings = env
    h = _auth(keys["write"])
    client.post("/v1/collections", json={"name": "lim"}, headers=h)
    big = _jpeg(make_image(1, (120, 90))) + b"\0" * settings.max_upload_bytes
    r = client.post("/v1/collections/lim/images", files=[("files", ("big.jpg", big, "image/jpeg"))], headers=h)
    assert r.status_code == 200 and r.json()["failures"][0]["code"] == "payload_too_large"
    many = [("files", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(settings.max_upload_files + 1)]
    assert client.post("/v1/collections/lim/images", files=many, headers=h).status_code == 422
    huge = client.post(
        "/v1/collections/lim/images",
        content=b"x",
        headers={**h, "Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(10**12)},
    )
    assert huge.status_code == 413
    _healthy(client)


def _wait(client, job_id: str, states=("succeeded", "failed", "cancelled"), timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['state']}")


def test_index_job_runs_in_the_background(env):
    client, keys, root, _ = env
    h = _auth(keys["write"])
    body = {"collection": "jobs", "paths": [str(root / "imports" / "batch")]}
    assert client.post("/v1/jobs/index", json=body).status_code == 401
    r = client.post("/v1/jobs/index", json=body, headers=h)
    assert r.status_code == 202, r.text
    job = _wait(client, r.json()["id"])
    assert job["state"] == "succeeded", job
    assert job["counts"]["added"] == 10 and job["counts"]["progress"]["done"] == 10
    assert {"read", "decode", "model", "write"} <= set(job["timings"])
    res = client.post("/v1/search/text", json={"query": "x", "collection": "jobs", "k": 20}).json()["results"]
    assert len(res) == 10
    # Finished jobs cannot be cancelled; unknown jobs are 404.
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=h).status_code == 409
    assert client.get("/v1/jobs/doesnotexist").status_code == 404


@pytest.mark.parametrize(
    ("paths", "status"),
    [(["/etc"], 403), (["http://example.com/a.jpg"], 422), (["{root}/imports/../data"], 403), ([], 422)],
)
def test_index_job_paths_are_confined(env, paths, status):
    client, keys, root, _ = env
    body = {"collection": "jobs2", "paths": [p.format(root=root) for p in paths]}
    assert client.post("/v1/jobs/index", json=body, headers=_auth(keys["write"])).status_code == status


def test_index_job_lists_cannot_reach_outside_the_roots(env, tmp_path):
    client, keys, root, _ = env
    outside = tmp_path / "secret.png"
    make_image(7, (40, 30)).save(outside, "PNG")
    inside = root / "imports" / "batch"
    listing = root / "imports" / "list.txt"
    listing.write_text(f"{outside}\n{next(inside.iterdir())}\n")
    r = client.post("/v1/jobs/index", json={"collection": "lst", "paths": [str(listing)]}, headers=_auth(keys["write"]))
    job = _wait(client, r.json()["id"])
    assert job["state"] == "succeeded" and job["counts"]["added"] == 1
    assert job["counts"]["failed_by_reason"] == {"source_error": 1}
    # The failure names the file without the server's absolute path.
    assert [f["path"] for f in job["failures"]] == [outside.name]
    assert str(outside.parent) not in str(job)


def test_cancel_a_running_job(env):
    client, keys, root, settings = env
    folder = root / "imports" / "many"
    folder.mkdir(parents=True)
    for i in range(60):  # large JPEGs, decoded in full: the job lasts several cancel polls (0.25 s)
        make_image(1000 + i, (1600, 1200)).save(folder / f"{i:03d}.jpg", "JPEG")
    h = _auth(keys["write"])
    body = {"collection": "cancel", "paths": [str(root / "imports" / "many")]}
    settings.jpeg_draft = False  # the server's settings object: its jobs read it
    try:
        r = client.post("/v1/jobs/index", json=body, headers=h)
        job_id = r.json()["id"]
        c = client.post(f"/v1/jobs/{job_id}/cancel", headers=h)
        assert c.status_code == 200 and c.json()["state"] in ("cancelling", "cancelled")
        job = _wait(client, job_id)
    finally:
        settings.jpeg_draft = True
    assert job["state"] == "cancelled", job
    # Whatever it committed is intact and searchable; nothing is half-added.
    info = client.get("/v1/collections/cancel")
    if info.status_code == 200:
        n = info.json()["count"]
        assert n < 60
        got = client.post("/v1/search/text", json={"query": "x", "collection": "cancel", "k": 200}).json()
        assert len(got["results"]) == n


def test_metrics_and_cors(env):
    client, _, _, _ = env
    for _ in range(3):
        client.post("/v1/search/text", json={"query": "a blue circle", "collection": "jobs", "k": 3})
    text = client.get("/metrics").text
    assert 'blipsearch_request_duration_seconds_count{method="POST",route="/v1/search/text",status="200"}' in text
    assert 'blipsearch_model_batch_size_count{kind="text"' in text
    assert 'blipsearch_index_vectors{collection="jobs"} 10.0' in text
    assert "blipsearch_queue_depth" in text
    pre = client.options(
        "/v1/search/text",
        headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST"},
    )
    assert pre.headers["access-control-allow-origin"] == "https://example.org"
    other = client.options(
        "/v1/search/text", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in other.headers


def test_keyed_reads(tmp_path, tiny_models):
    settings = Settings(data_dir=tmp_path / "d", model=str(tiny_models["blip-itm"]), read_access="key")
    key = create_key(open_catalog(settings.catalog_url()), "reader", "read")[0]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/v1/collections").status_code == 401
        assert client.get("/v1/collections", headers=_auth(key)).status_code == 200
        assert client.get("/healthz").status_code == 200  # liveness stays open
