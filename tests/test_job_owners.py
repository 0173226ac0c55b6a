"""Jobs: a job another live process runs is never resumed (409 / exit 4), and progress counts
are computed only when a report is due, failures counted incrementally."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from blipsearch.config import Settings
from blipsearch.errors import ConflictError
from storage import owners
from storage.api_keys import create_key
from storage.catalog import JobOwnerRow, open_catalog
from storage.jobs import FailureTally, JobWatch, refuse_if_owned_elsewhere


def test_a_job_running_in_another_live_process_is_not_resumed(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", model=str(tmp_path / "no-model"))
    catalog = open_catalog(settings.catalog_url())
    job_id = catalog.create_job("index", "c", settings.model, {"paths": []}, state="running")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with catalog.session() as s:  # the job is owned by the other (CLI) process
            row = s.get(JobOwnerRow, job_id)
            assert row is not None
            row.pid, row.started = other.pid, owners._start_token(other.pid)
        key = create_key(catalog, "w", "write")[0]
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            r = client.post(f"/v1/jobs/{job_id}/resume", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 409 and f"pid {other.pid}" in r.json()["detail"], r.text
        assert catalog.get_job(job_id).state == "running"  # untouched
        with pytest.raises(ConflictError):
            refuse_if_owned_elsewhere(catalog, job_id)
    finally:
        other.kill()
        other.wait()
    assert catalog.get_job(job_id).state == "interrupted"  # its owner is gone: now it may resume
    refuse_if_owned_elsewhere(catalog, job_id)


def test_progress_counts_are_built_only_when_a_report_is_due(tmp_path):
    catalog = open_catalog(Settings(data_dir=tmp_path / "data").catalog_url())
    job_id = catalog.create_job("index", "c", None, {})
    watch = JobWatch(catalog, job_id, total=10_000, poll_s=3600)
    built: list[int] = []
    failures: list[dict[str, str]] = []
    tally = FailureTally()

    def counts() -> dict:
        built.append(1)
        return {"failed_by_reason": tally.update(failures)}

    for i in range(10_000):
        failures.append({"reason": "corrupt" if i % 2 else "missing"})
        watch.tick(counts, i)
    watch.tick(counts, 10_000, force=True)
    assert len(built) <= 2  # not once per item
    assert catalog.get_job(job_id).counts["failed_by_reason"] == {"corrupt": 5000, "missing": 5000}
    assert tally.seen == 10_000


def test_nul_bytes_in_lists_and_manifests_are_per_row_failures(tmp_path):
    from indexer.sources import open_sources

    good = tmp_path / "a.png"
    good.write_bytes(b"x")
    (tmp_path / "l.txt").write_text(f"{good}\n{good}\0x\n", encoding="utf-8")
    (tmp_path / "m.csv").write_text(f"path,tag\n{good},t\n{good}\0,u\n", encoding="utf-8")
    for name in ("l.txt", "m.csv"):
        items = list(open_sources([tmp_path / name]))
        assert [i.error is None for i in items] == [True, False] and "NUL" in (items[1].error or "")


def test_a_job_whose_run_crashes_never_stays_active(tmp_path, monkeypatch):
    import time

    import service.indexing
    from api.jobs import JobRunner

    def crash(*_a, **_k):
        raise ValueError("embedded null byte")

    monkeypatch.setattr(service.indexing, "index_paths", crash)
    settings = Settings(data_dir=tmp_path / "data", model=str(tmp_path / "no-model"))
    manager = JobRunner(settings)
    job_id = manager.catalog.create_job("index", "c", settings.model, {"paths": []}, state="pending")
    manager._start(job_id, "c", [], settings.model, lambda m: None)  # type: ignore[arg-type,return-value]
    deadline = time.monotonic() + 10
    while manager.catalog.get_job(job_id).state == "pending" and time.monotonic() < deadline:
        time.sleep(0.05)
    job = manager.catalog.get_job(job_id)
    assert job.state == "failed" and "ValueError" in (job.error or "")
