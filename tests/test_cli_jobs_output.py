"""``jobs show`` / ``jobs list`` human output: stage and queue names of any length stay in their
column, a rate over no busy time is '-', and an index job that found no image says so."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from blipsearch.config import Settings
from cli.main import app as cli_app
from storage.catalog import open_catalog
from storage.job_run import JobRun


def _cli(settings: Settings, *args: str) -> str:
    r = CliRunner().invoke(cli_app, [*args, "--data-dir", str(settings.data_dir)])
    assert r.exit_code == 0, (args, r.exit_code, r.output)
    return r.output


def test_stage_and_queue_columns_line_up_and_idle_stages_have_no_rate(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    catalog = open_catalog(settings.catalog_url())
    job = JobRun.start(catalog, "index", "photos", None, {}, total=64)
    timings = {
        "decode": {"busy_s": 0.92, "items": 64, "items_per_s": 69.9},
        "places": {"busy_s": 0.00004, "items": 64, "items_per_s": 1630614.8},
        "queues": {"decoded_ahead_of_model": {"mean": 18.92, "max": 37, "capacity": 64}},
    }
    job.succeed({"added": 64}, done=64, timings=timings)
    shown = _cli(settings, "jobs", "show", job.job_id[:8]).splitlines()
    table = [line for line in shown if line.startswith("    ")]
    header = next(line for line in table if line.split()[0] == "stage")
    queue_header = next(line for line in table if line.split()[0] == "queue")
    queue_row = next(line for line in table if line.split()[0] == "decoded_ahead_of_model")
    # every row's numbers end where the header's columns end
    for row in table:
        assert len(row) == len(header), (row, header)
    assert len(queue_header) == len(queue_row) == len(header)
    places = next(line.split() for line in table if line.split()[0] == "places")
    assert places == ["places", "0.00", "64", "-"]  # not 1630614.8 items/s
    decode = next(line.split() for line in table if line.split()[0] == "decode")
    assert decode == ["decode", "0.92", "64", "69.9"]


def test_an_index_job_that_found_nothing_says_so(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    catalog = open_catalog(settings.catalog_url())
    empty = JobRun.start(catalog, "index", "photos", None, {}, total=0)
    empty.succeed({"added": 0, "skipped_duplicates": 0, "failed": 0}, done=0)
    full = JobRun.start(catalog, "index", "photos", None, {}, total=2)
    full.succeed({"added": 2}, done=2)
    listing = _cli(settings, "jobs", "list").splitlines()
    assert "no images found" in next(line for line in listing if line.startswith(empty.job_id[:8]))
    full_line = next(line for line in listing if line.startswith(full.job_id[:8]))
    assert "added 2" in full_line and "no images" not in full_line
    assert "added 0, no images found" in _cli(settings, "jobs", "show", empty.job_id)
    assert "no images" not in _cli(settings, "jobs", "show", full.job_id)
    raw = json.loads(_cli(settings, "jobs", "show", empty.job_id, "--json"))  # --json: the record, unchanged
    assert raw["counts"]["added"] == 0 and "no images found" not in json.dumps(raw)
