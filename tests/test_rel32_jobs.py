"""Job failures stored as a job goes and listed in pages (API and CLI), and the ``jobs`` CLI's
human output: a header row, readable counts and stages, id prefixes."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from typer.testing import CliRunner

from api.app import create_app
from blipsearch.config import Settings
from cli.main import app as cli_app
from storage.catalog import JobRow, open_catalog
from storage.job_run import JobRun


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data")


def _failures(n: int, start: int = 0) -> list[dict[str, str]]:
    return [{"path": f"/nowhere/f{i}.jpg", "error": "cannot identify", "reason": "corrupt"} for i in range(start, n)]


def _inserted_rows(catalog) -> list[int]:
    """Rows inserted into (or deleted from) job_failures, per statement, as the catalog runs them."""
    seen: list[int] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(("INSERT INTO JOB_FAILURES", "DELETE FROM JOB_FAILURES")):
            seen.append(cursor.rowcount)

    event.listen(catalog.engine, "after_cursor_execute", count)
    return seen


def test_failures_are_stored_incrementally_and_paged(settings):
    catalog = open_catalog(settings.catalog_url())
    inserted = _inserted_rows(catalog)
    job = JobRun.start(catalog, "index", "c", None, {}, total=300)
    failures: list[dict[str, str]] = []
    for tick in range(5):
        failures.extend(_failures(60 * (tick + 1), 60 * tick))
        before = sum(inserted)
        job.progress({"added": 0, "failed": len(failures)}, len(failures), force=True, failures=failures)
        assert sum(inserted) - before == 60  # only the new ones are written on a report
    before = sum(inserted)
    job.progress({"failed": len(failures)}, len(failures), force=True, failures=failures)
    assert sum(inserted) == before  # nothing new: nothing written
    job.succeed({"added": 0, "failed": 300}, done=300, failures=failures)
    assert sum(inserted) == 300

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        page = client.get(f"/v1/jobs/{job.job_id}/failures", params={"offset": 250, "limit": 100}).json()
        assert page["total"] == 300 and len(page["failures"]) == 50
        assert page["failures"][0]["path"] == "f250.jpg"  # shown without the server path
        first = client.get(f"/v1/jobs/{job.job_id}/failures").json()
        assert first["limit"] == 100 and [f["path"] for f in first["failures"][:2]] == ["f0.jpg", "f1.jpg"]
        for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "x"}):
            assert client.get(f"/v1/jobs/{job.job_id}/failures", params=bad).status_code == 422, bad
        assert client.get("/v1/jobs/0123abcd/failures").status_code == 404

    # A resumed job lists its latest run's failures only.
    catalog.transition(job.job_id, ("succeeded",), "failed")
    again = JobRun.resume(catalog, job.job_id)
    again.succeed({"failed": 1}, done=1, failures=_failures(1))
    runner = CliRunner()
    r = runner.invoke(cli_app, ["jobs", "show", job.job_id[:8], "--failures", "--data-dir", str(settings.data_dir)])
    assert r.exit_code == 0, r.output
    assert "failures 1-1 of 1" in r.output


def _cli(settings, *args: str, code: int = 0) -> str:
    r = CliRunner().invoke(cli_app, [*args, "--data-dir", str(settings.data_dir)])
    assert r.exit_code == code, (args, r.exit_code, r.output)
    return r.output


def test_jobs_cli_output(settings):
    catalog = open_catalog(settings.catalog_url())
    index = JobRun.start(catalog, "index", "photos", "/srv/m", {}, total=4)
    timings = {
        "wall_s": 99.0,
        "decode": {"busy_s": 1.5, "items": 4, "items_per_s": 2.67},
        "model": {"busy_s": 0.5, "items": 4, "items_per_s": 8.0},
        "queues": {"decoded_ahead_of_model": {"mean": 1.5, "max": 3, "capacity": 8}},
    }
    index.succeed({"added": 4, "skipped_duplicates": 0, "failed": 0, "updated": 0}, done=4, timings=timings)
    mod = JobRun.start(catalog, "moderate", "photos", None, {})
    mod.succeed({"checked": 6, "already_done": 0, "failed": 0, "decisions": {"allow": 5, "flag": 1}}, done=6)
    # started → finished: 12.5 s apart
    with catalog.session() as s:
        row = s.get(JobRow, index.job_id)
        row.finished_at = row.started_at + timedelta(seconds=12.5)

    listing = _cli(settings, "jobs", "list").splitlines()
    assert listing[0].split()[:4] == ["ID", "KIND", "COLLECTION", "STATE"]
    assert any(line.startswith(index.job_id[:8]) for line in listing[1:])
    mod_line = next(line for line in listing if line.startswith(mod.job_id[:8]))
    assert "checked 6" in mod_line and "added" not in mod_line

    shown = _cli(settings, "jobs", "show", index.job_id[:8])
    assert f"job {index.job_id}" in shown
    assert "?/s" not in shown and "failed 0" not in shown and "updated 0" not in shown and "{" not in shown
    assert "added 4" in shown and "wall_s 12.5" in shown
    table = [line.split() for line in shown.splitlines()]
    assert ["stage", "busy", "s", "items", "items/s"] in table
    assert ["decode", "1.50", "4", "2.7"] in table
    assert ["decoded_ahead_of_model", "1.5", "3", "8"] in table

    mod_shown = _cli(settings, "jobs", "show", mod.job_id)
    assert "checked 6" in mod_shown and "added" not in mod_shown and "flag 1" in mod_shown

    # --json is the stored record, unchanged
    raw = json.loads(_cli(settings, "jobs", "show", index.job_id, "--json"))
    assert raw["counts"]["added"] == 4 and raw["timings"]["wall_s"] == 99.0 and raw["id"] == index.job_id

    # prefixes: unknown → 3, ambiguous → 2 with one line
    _cli(settings, "jobs", "show", "ffffffffff", code=3)
    with catalog.session() as s:
        s.add(JobRow(id="abcd1234" + "0" * 24, kind="index", collection="x", counts={}, failures=[], timings={}))
        s.add(JobRow(id="abcd1234" + "1" * 24, kind="index", collection="x", counts={}, failures=[], timings={}))
    out = _cli(settings, "jobs", "show", "abcd1234", code=2)
    assert "more than one job" in out and len(out.strip().splitlines()) == 1
    _cli(settings, "jobs", "cancel", "abcd1234", code=2)
    _cli(settings, "jobs", "resume", "abcd1234", code=2)
    assert "pending" in _cli(settings, "jobs", "show", "abcd12340")  # unique: runs
