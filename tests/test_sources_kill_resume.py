"""SIGKILL an indexing process reading Parquet image bytes (written by the datasets library) or
objects in a bucket (a real S3 API on loopback; resumed through the API); the
re-run adds exactly what was not committed, every image ends up once, and a run over the
unchanged input embeds nothing. (Objects in a bucket: tests/test_s3_failures.py.)"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.collection import Collection
from tests.helpers import make_image

pytestmark = pytest.mark.timeout(600)
N = 96


def _jpegs() -> list[bytes]:
    out = []
    for i in range(N):
        buf = io.BytesIO()
        make_image(900 + i, (48, 36)).save(buf, "JPEG")
        out.append(buf.getvalue())
    return out


def _committed(data_dir: Path, name: str) -> int:
    try:
        return int(json.loads((data_dir / "collections" / name / "manifest.json").read_text())["next_id"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def _parquet(tmp_path: Path, images: list[bytes]) -> str:
    import datasets

    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": f"{i:03d}.jpg"} for i, b in enumerate(images)], "n": list(range(N))},
        features=datasets.Features({"image": datasets.Image(), "n": datasets.Value("int32")}),
    )
    ds.to_parquet(str(tmp_path / "train.parquet"))
    return str(tmp_path / "train.parquet")


@pytest.mark.slow
def test_a_killed_parquet_job_resumes_without_redoing_committed_images(tmp_path, tiny_models):
    images = _jpegs()
    source = _parquet(tmp_path, images)
    data_dir = tmp_path / "data"
    env = {**os.environ, "BLIPSEARCH_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "cli", "index", source, "-c", "k", "--model", str(tiny_models["blip-itm"])]
    cmd += ["--batch-size", "4", "--shard-size", "4", "--workers", "1", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _committed(data_dir, "k") < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert killed, "the job finished before it could be killed; the test proves nothing"
    before = _committed(data_dir, "k")
    assert 8 <= before < N

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    # Only what the kill lost is embedded; the committed images are counted as already indexed.
    assert (report["added"], report["skipped_duplicates"], report["failed"]) == (N - before, before, 0), report
    table = Collection.open(data_dir, "k").read_table(["sha256", "uri"])
    shas = table.column("sha256").to_pylist()
    assert sorted(shas) == sorted(hashlib.sha256(b).hexdigest() for b in images)  # each image once
    assert len(set(table.column("uri").to_pylist())) == N

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert json.loads(again.stdout)["added"] == 0 and json.loads(again.stdout)["skipped_duplicates"] == N


def _s3_env(tmp_path: Path, endpoint: str, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "BLIPSEARCH_DATA_DIR": str(tmp_path / "data"),
        "HF_HUB_OFFLINE": "1",
        "BLIPSEARCH_S3_ENDPOINT_URL": endpoint,
        "BLIPSEARCH_IMPORT_ROOTS": json.dumps([prefix]),  # an object-store prefix as an import root
    }


@pytest.mark.slow
def test_a_killed_cli_job_over_objects_resumes_through_the_api_and_reruns_embed_nothing(
    s3, tmp_path, tiny_models, monkeypatch
):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from blipsearch.config import Settings
    from storage.api_keys import create_key
    from storage.catalog import open_catalog

    bucket = s3.bucket(f"resume-{time.monotonic_ns() % 10**8}")
    images = _jpegs()
    keys = [f"objs/{i:03d}.jpg" for i in range(N)]
    for key, data in zip(keys, images, strict=True):
        s3.put(bucket, key, data)
    prefix = f"s3://{bucket}/objs"
    data_dir = tmp_path / "data"
    env = _s3_env(tmp_path, s3.endpoint, prefix)
    model = str(tiny_models["blip-itm"])
    cmd = [sys.executable, "-m", "cli", "index", prefix, "-c", "s", "--model", model]
    cmd += ["--batch-size", "4", "--shard-size", "4", "--workers", "1", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while _committed(data_dir, "s") < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert killed, f"the job ended before it could be killed: {proc.communicate()[1][-2000:]}"
    before = _committed(data_dir, "s")
    assert 8 <= before < N
    committed = [r["uri"] for r in Collection.open(data_dir, "s").read_table(["uri"]).to_pylist()]
    # A committed object rewritten with other bytes of the same size: were it read again, it
    # would be re-embedded as changed; the resume must skip it by its listed size, unread.
    first = committed[0].split(f"s3://{bucket}/", 1)[1]
    changed = bytearray(images[keys.index(first)])
    changed[-3] ^= 0xFF
    s3.put(bucket, first, bytes(changed))

    for k, v in env.items():
        if k.startswith("BLIPSEARCH_"):
            monkeypatch.setenv(k, v)
    cfg = Settings(model=model)
    assert cfg.import_prefixes == [prefix]
    catalog = open_catalog(cfg.catalog_url())
    job = catalog.list_jobs("s")[0]
    assert job.state in ("running", "interrupted")  # the killed process never closed it
    h = {"Authorization": f"Bearer {create_key(catalog, 'w', 'write')[0]}"}
    with TestClient(create_app(cfg), raise_server_exceptions=False) as client:
        r = client.post(f"/v1/jobs/{job.id}/resume", headers=h)
        assert r.status_code == 202, r.text
        done = _wait(client, job.id)
        assert done["state"] == "succeeded", done
        counts = done["counts"]
        assert (counts["added"], counts.get("updated", 0), counts["failed"]) == (N - before, 0, 0), counts
        uris = [r["uri"] for r in Collection.open(data_dir, "s").read_table(["uri"]).to_pylist()]
        assert sorted(uris) == sorted(f"s3://{bucket}/{k}" for k in keys)  # every object once

        # A new API job over the unchanged prefix embeds nothing; one outside the root is refused.
        r = client.post("/v1/jobs/index", json={"collection": "s", "paths": [prefix]}, headers=h)
        assert r.status_code == 202, r.text
        again = _wait(client, r.json()["id"])
        assert again["state"] == "succeeded" and again["counts"]["added"] == 0, again
        outside = client.post("/v1/jobs/index", json={"collection": "s", "paths": [f"s3://{bucket}"]}, headers=h)
        assert outside.status_code == 403, outside.text

    # ... and so does the CLI.
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    report = json.loads(rerun.stdout)
    assert (report["added"], report["updated"], report["skipped_duplicates"]) == (0, 0, N), report


def _wait(client, job_id: str, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still running")
