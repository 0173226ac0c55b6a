"""The CPU-side logic of the GPU check (scripts/gpu_check.sh, scripts/bench/gpu.py): argument
handling, result writing, and a clean skip where no CUDA device is visible. The GPU numbers
themselves come from a run on a lent GPU machine (BENCHMARKS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

import gpu  # noqa: E402

needs_no_cuda = pytest.mark.skipif(
    gpu.cuda_reason() is None, reason="a CUDA device is visible: the skip path cannot run"
)


def _check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--wheels", str(tmp_path / "no-wheels"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@needs_no_cuda
def test_check_skips_cleanly_without_cuda(tmp_path):
    out = tmp_path / "out"
    r = _check(tmp_path, "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] is True
    assert "CUDA" in summary["reason"] or "torch" in summary["reason"]
    assert "skipped" in r.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--budget-s", "soon"], "--budget-s takes a positive whole number"),
        (["--budget-s", "0"], "--budget-s takes a positive whole number"),
        (["--frobnicate"], "unknown option '--frobnicate'"),
        (["--out"], "--out needs a folder"),
        (["--wheels", "--quick"], "--wheels needs a folder"),
    ],
)
def test_check_refuses_bad_arguments_in_one_line(tmp_path, args, words):
    r = _check(tmp_path, *args)
    assert r.returncode == 2
    assert words in r.stderr
    assert "Traceback" not in r.stderr


def test_check_help_lists_the_options(tmp_path):
    r = _check(tmp_path, "--help")
    assert r.returncode == 0
    for flag in ("--out", "--wheels", "--budget-s", "--quick", "--no-tests", "--no-bench"):
        assert flag in r.stdout


@needs_no_cuda
def test_bench_writes_a_skip_record_without_cuda(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--out", str(out), "--quick"]) == 0
    result = json.loads(out.read_text())
    assert result["skipped"] is True and result["reason"]
    assert result["environment"]["python"]
    assert "sections" not in result


def test_bench_rejects_a_non_positive_budget():
    with pytest.raises(SystemExit) as e:
        gpu.parse_args(["--budget-s", "0"])
    assert e.value.code == 2


@needs_no_cuda
def test_a_failing_section_records_its_error_and_the_budget_skips_the_rest(monkeypatch):
    # Pretend a device is there: the GEMM section then really fails (no CUDA) and must be
    # recorded as an error, not abort the run; a spent budget skips the sections after it.
    monkeypatch.setattr(gpu, "cuda_reason", lambda: None)
    args = gpu.parse_args(["--quick", "--sections", "gemm", "faiss", "--budget-s", "1e-9"])
    result = gpu.run(args)
    assert result["skipped"] is False
    assert "error" in result["sections"]["gemm"]
    assert "budget" in result["sections"]["faiss"]["skipped"]
    assert "index" not in result["sections"]


def test_recall_counts_the_overlap_of_top_k_lists():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 2, 9], [4, 5, 6]])
    assert gpu._recall(found, truth) == pytest.approx(5 / 6)
