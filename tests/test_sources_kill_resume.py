"""SIGKILL an indexing process reading Parquet image bytes (written by the datasets library); the
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
