"""What the web page needs from the API: the moderation review queue and manual decisions that
search honours, the jobs list and resume, and a collection's metadata keys."""

from __future__ import annotations

import csv
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from blipsearch.config import Settings
from models import load_itm
from moderation.batch import moderate_collection
from moderation.checks import Moderator
from moderation.policy import parse_policy
from moderation.store import effective_decisions
from service.indexing import index_paths
from storage.api_keys import create_key
from storage.catalog import open_catalog
from storage.collection import Collection
from tests.helpers import write_images

# Every image hits (thresholds 0): "blue" sends it to review, "dark" flags it; review is the more severe.
REVIEW_POLICY = {
    "name": "queue",
    "version": 1,
    "categories": [
        {"name": "blue", "prompts": ["a blue circle"], "action": "review", "itc_threshold": 0.0, "itm_threshold": 0.0},
        {"name": "dark", "prompts": ["a dark photo"], "action": "flag", "itc_threshold": 0.0, "itm_threshold": 0.0},
    ],
}


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_models, blip_embedder):
    root = tmp_path_factory.mktemp("review")
    settings = Settings(
        data_dir=root / "data", model=str(tiny_models["blip-itm"]), batch_size=4, import_roots=[root / "imports"]
    )
    images = write_images(root / "imports" / "tagged", 6)
    with open(root / "imports" / "m.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "tag", "camera"])
        for i, p in enumerate(images):
            w.writerow([str(p), f"t{i % 2}", "nikon"])
    index_paths(settings, [root / "imports" / "m.csv"], "mod", embedder=blip_embedder, progress=False)
    mod = Moderator(parse_policy(REVIEW_POLICY), blip_embedder, load_itm(blip_embedder, batch_size=4))
    catalog = open_catalog(settings.catalog_url())
    moderate_collection(settings, catalog, Collection.open(settings.data_dir, "mod"), mod, progress=False)
    keys = {scope: create_key(catalog, f"rv-{scope}", scope)[0] for scope in ("read", "write")}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, keys, root, settings


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _search(client, **extra) -> set[int]:
    body = {"query": "a blue circle", "collection": "mod", "k": 20, **extra}
    r = client.post("/v1/search/text", json=body)
    assert r.status_code == 200, r.text
    return {x["id"] for x in r.json()["results"]}


def test_review_queue_lists_triggers_and_manual_decisions_change_search(env):
    client, keys, _, settings = env
    ids = set(Collection.open(settings.data_dir, "mod").read_table(["id"]).column("id").to_pylist())
    q = client.get("/v1/moderation/queue", params={"collection": "mod"})
    assert q.status_code == 200, q.text
    body = q.json()
    assert body["total"] == 6 and {i["id"] for i in body["items"]} == ids
    first = body["items"][0]
    assert first["decision"] == "review"
    trig = first["triggers"]  # only what led to the decision: the review category
    assert [t["category"] for t in trig] == ["blue"] and trig[0]["prompt"] == "a blue circle"
    assert trig[0]["policy"] == "queue" and 0.0 <= trig[0]["score"] <= 1.0
    assert client.get("/v1/moderation/queue", params={"collection": "mod", "limit": 2}).json()["total"] == 6
    assert len(client.get("/v1/moderation/queue", params={"collection": "mod", "limit": 2}).json()["items"]) == 2

    hide = {"filters": {"exclude_decisions": ["review", "flag"]}}
    assert _search(client) == ids and _search(client, **hide) == set()
    a, b = sorted(ids)[:2]
    # Writes need a key with scope write; unknown records, collections and decisions are refused.
    decide = {"collection": "mod", "id": a, "decision": "approve", "note": "looks fine"}
    assert client.post("/v1/moderation/decisions", json=decide).status_code == 401
    assert client.post("/v1/moderation/decisions", json=decide, headers=_auth(keys["read"])).status_code == 403
    h = _auth(keys["write"])
    assert client.post("/v1/moderation/decisions", json={**decide, "id": 999}, headers=h).status_code == 404
    assert client.post("/v1/moderation/decisions", json={**decide, "collection": "no"}, headers=h).status_code == 404
    assert client.post("/v1/moderation/decisions", json={**decide, "decision": "maybe"}, headers=h).status_code == 422

    r = client.post("/v1/moderation/decisions", json=decide, headers=h)
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["decision"] == "allow" and rec["manual"]["triggers"][0]["note"] == "looks fine"
    assert rec["manual"]["triggers"][0]["by"] and [x["policy"] for x in rec["results"]] == ["queue"]
    assert _search(client, **hide) == {a}  # approved: no longer hidden with the review filter
    q = client.get("/v1/moderation/queue", params={"collection": "mod"}).json()
    assert q["total"] == 5 and a not in {i["id"] for i in q["items"]}

    # Block: hidden by default; a later manual decision overrides an earlier one.
    assert client.post("/v1/moderation/decisions", json={**decide, "id": b, "decision": "block"}, headers=h).is_success
    assert _search(client) == ids - {b}
    assert client.get(f"/v1/moderation/records/mod/{b}").json()["decision"] == "block"
    assert client.post("/v1/moderation/decisions", json={**decide, "id": b}, headers=h).is_success
    assert _search(client) == ids and _search(client, **hide) == {a, b}
    assert effective_decisions(open_catalog(settings.catalog_url()), "mod")[b] == "allow"
    blocked = client.get("/v1/moderation/queue", params={"collection": "mod", "decision": "block"}).json()
    assert blocked["total"] == 0

    # A record never checked has no decision; unknown collections are 404.
    assert client.get(f"/v1/moderation/records/mod/{a}").json()["manual"]["decision"] == "allow"
    assert client.get("/v1/moderation/records/mod/999").status_code == 404
    assert client.get("/v1/moderation/queue", params={"collection": "nope"}).status_code == 404
    assert client.get("/v1/moderation/queue").status_code == 422


def test_collection_metadata_keys(env):
    client, _, _, _ = env
    info = client.get("/v1/collections/mod").json()
    assert info["metadata_keys"] == ["camera", "tag"]
    r = client.post(
        "/v1/search/text",
        json={"query": "x", "collection": "mod", "k": 20, "filters": {"fields": {"tag": "t1"}}},
    )
    assert len(r.json()["results"]) == 3


def _wait(client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] not in ("pending", "running", "cancelling"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['state']}")


def test_jobs_list_and_resume(env):
    client, keys, root, settings = env
    jobs = client.get("/v1/jobs").json()["jobs"]
    assert {j["kind"] for j in jobs} >= {"index", "moderate"}
    mod_job = next(j for j in jobs if j["kind"] == "moderate")
    assert mod_job["state"] == "succeeded" and mod_job["counts"]["checked"] == 6
    assert [j["kind"] for j in client.get("/v1/jobs", params={"kind": "moderate"}).json()["jobs"]] == ["moderate"]
    assert client.get("/v1/jobs", params={"state": "nope"}).status_code == 422

    # A job left failed (a crashed server) resumes through the API and finishes the work.
    # It keeps how it was started: here a manifest whose metadata is only its "tag" column.
    images = write_images(root / "imports" / "more", 5, start=50)
    with open(root / "imports" / "more.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "tag", "camera"])
        w.writerows([str(p), "x", "canon"] for p in images)
    catalog = open_catalog(settings.catalog_url())
    saved = {"paths": [str((root / "imports" / "more.csv").resolve())], "metadata_columns": ["tag"]}
    job_id = catalog.create_job("index", "more", settings.model, saved, state="failed")
    h = _auth(keys["write"])
    assert client.post(f"/v1/jobs/{job_id}/resume").status_code == 401
    r = client.post(f"/v1/jobs/{job_id}/resume", headers=h)
    assert r.status_code == 202, r.text
    job = _wait(client, job_id)
    assert job["state"] == "succeeded" and job["counts"]["added"] == 5, job
    more = client.get("/v1/collections/more").json()
    assert more["count"] == 5 and more["metadata_keys"] == ["tag"]
    listed = client.get("/v1/jobs", params={"collection": "more"}).json()["jobs"]
    assert [j["id"] for j in listed] == [job_id]
    # Finished or non-index jobs do not resume; unknown ones are 404.
    assert client.post(f"/v1/jobs/{job_id}/resume", headers=h).status_code == 409
    assert client.post(f"/v1/jobs/{mod_job['id']}/resume", headers=h).status_code == 409
    assert client.post("/v1/jobs/nope/resume", headers=h).status_code == 404
