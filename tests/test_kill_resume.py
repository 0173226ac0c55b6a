"""SIGKILL an indexing process at random points; re-runs finish with every image exactly once."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search import index_store
from storage.collection import Collection
from tests.helpers import write_bad_files, write_images


def _committed(data_dir: Path, name: str) -> int:
    try:
        return json.loads((data_dir / "collections" / name / "manifest.json").read_text())["next_id"]
    except (FileNotFoundError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path, tiny_models):
    images = write_images(tmp_path / "in", 240)
    write_bad_files(tmp_path / "in" / "bad")
    data_dir = tmp_path / "data"
    env = {**os.environ, "BLIPSEARCH_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "cli",
        "index",
        str(tmp_path / "in"),
        "-c",
        "k",
        "--model",
        str(tiny_models["blip-itm"]),
        "--batch-size",
        "4",
        "--shard-size",
        "4",
        "--workers",
        "1",
        "--json",
    ]
    # Random kill points, fresh each run (the seed is in every failure message, and
    # BLIPSEARCH_KILL_SEED replays a run): a commit count to wait for, then a random delay, so
    # kills land before, during and after shard commits. The second run decodes in processes.
    seed = int(os.environ.get("BLIPSEARCH_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    kills = 0
    for n, target in enumerate(sorted(rng.sample(range(0, 200), 3))):
        run = cmd + (["--decode", "process"] if n == 1 else [])
        proc = subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while _committed(data_dir, "k") < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    assert kills >= 2, f"the job finished before it could be killed; the test proves nothing (seed {seed})"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"seed {seed}: {done.stderr}"
    report = json.loads(done.stdout)
    assert report["failed"] == 5 and report["collection_size"] == len(images)

    coll = Collection.open(data_dir, "k")
    table = coll.read_table(["id", "sha256", "uri"])
    expected = {hashlib.sha256(p.read_bytes()).hexdigest() for p in images}
    shas = table.column("sha256").to_pylist()
    assert len(shas) == len(expected) and set(shas) == expected, f"seed {seed}"  # exactly once each, none lost
    ids = table.column("id").to_pylist()
    assert len(set(ids)) == len(ids)
    # No leftovers of the killed runs, and the index matches the records.
    assert not [p for p in coll.root.iterdir() if p.name.endswith(".tmp")]
    index, covered = index_store.load(coll)
    assert index.ntotal == len(images) and covered == [s.file for s in coll.manifest.shards]

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert json.loads(again.stdout)["added"] == 0
