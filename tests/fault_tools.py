"""Helpers of the fault-injection tests (tests/test_faults_*.py): run a blipsearch command in a
subprocess that SIGKILLs itself at its Nth write step (storage/faults.py), and check that a
collection is consistent: it opens, lists each shard once, holds each record (id and sha256)
once, and its index loads and searches."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cli(args: Sequence[str], data_dir: Path, env: dict[str, str] | None = None, timeout: float = 300):
    full = {
        **os.environ,
        "BLIPSEARCH_DATA_DIR": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    for key in ("BLIPSEARCH_FAULT_KILL_AT", "BLIPSEARCH_FAULT_LOG"):
        if key not in (env or {}):
            full.pop(key, None)
    script = args[0] == "-m" or args[0].endswith(".py")  # a driver script, else a blipsearch command
    return subprocess.run(
        [sys.executable, *args] if script else [sys.executable, "-m", "cli", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def in_process(args: Sequence[str], data_dir: Path, env: dict[str, str] | None = None) -> None:
    """Run ``args`` to completion in this process (models already imported: far cheaper than a
    subprocess): a blipsearch command through typer's runner, or ``-m MODULE ARGS`` a driver's
    ``main``."""
    import importlib

    from storage import faults

    old = {k: os.environ.get(k) for k in ("BLIPSEARCH_DATA_DIR", *(env or {}))}
    os.environ.update({"BLIPSEARCH_DATA_DIR": str(data_dir), **(env or {})})
    faults._config.cache_clear()
    try:
        if args[0] == "-m":
            importlib.import_module(args[1]).main(*args[2:])
            return
        from typer.testing import CliRunner

        from cli.main import app

        out = CliRunner().invoke(app, list(args))
        assert out.exit_code == 0, f"{args}: exit {out.exit_code}: {out.output[-3000:]} {out.exception!r}"
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        faults._config.cache_clear()


def count_steps(args: Sequence[str], data_dir: Path, log: Path) -> int:
    in_process(args, data_dir, {"BLIPSEARCH_FAULT_LOG": str(log)})
    return len(log.read_text().splitlines()) if log.exists() else 0


def sample_steps(n: int, k: int) -> list[int]:
    """Steps 1..n to kill at: all of them with BLIPSEARCH_FAULT_SWEEP=all, else ``k`` spread
    evenly (the first and last included; BLIPSEARCH_FAULT_SAMPLES overrides ``k``)."""
    k = int(os.environ.get("BLIPSEARCH_FAULT_SAMPLES", k))
    if os.environ.get("BLIPSEARCH_FAULT_SWEEP") == "all" or n <= k:
        return list(range(1, n + 1))
    return sorted({round(float(x)) for x in np.linspace(1, n, k)})


def kill_sweep(
    base: Path,
    work: Path,
    args_for: Callable[[Path], Sequence[str]],
    check: Callable[[Path, bool], None],
    k: int = 3,
) -> list[int]:
    """Count the write steps of ``args_for(data_dir)`` on a copy of ``base`` (in process); then,
    for each sampled step N, on a fresh copy: run it in a subprocess that kills itself at N (it
    must die by SIGKILL), ``check(d, False)``, re-run it to completion (in process), ``check(d,
    True)``. Returns the steps killed at."""
    first = work / "count"
    shutil.copytree(base, first, symlinks=True)
    n = count_steps(args_for(first), first, work / "count.log")
    check(first, True)
    assert n > 0, "the command made no write step: the sweep would prove nothing"
    steps = sample_steps(n, k)
    for step in steps:
        d = work / f"kill{step}"
        shutil.copytree(base, d, symlinks=True)
        log = work / f"kill{step}.log"
        killed = cli(args_for(d), d, {"BLIPSEARCH_FAULT_KILL_AT": str(step), "BLIPSEARCH_FAULT_LOG": str(log)})
        made = len(log.read_text().splitlines()) if log.exists() else 0
        if killed.returncode == 0 and made < step:  # the counted run can make a few more (other threads' commits)
            assert made >= n // 2, f"the subprocess made {made} write steps, the counted run {n}"
            continue
        assert killed.returncode == -9, f"step {step}/{n}: rc {killed.returncode}: {killed.stderr[-2000:]}"
        check(d, False)
        # Killed after its last durable write, the command had finished: a re-run has nothing to do
        # (a re-embed to the model the collection already has is refused); the final state is checked.
        if step < n:
            in_process(args_for(d), d)
        check(d, True)
    return steps


def consistent(data_dir: Path, name: str, embedders: Sequence[Any]) -> dict[str, Any]:
    """Open ``name`` and check it; returns {"ids", "shas", "manifest", "rows"}."""
    from search.engine import SearchEngine
    from storage.collection import Collection

    coll = Collection.open(data_dir, name)
    m = coll.manifest
    files = [s.file for s in m.shards]
    assert len(files) == len(set(files)), f"a shard is listed twice: {files}"
    assert all(coll.shard_path(f).is_file() for f in files), "the manifest names a missing shard"
    table = coll.read_table(["id", "sha256"]) if m.shards else None
    ids = table.column("id").to_pylist() if table is not None else []
    shas = table.column("sha256").to_pylist() if table is not None else []
    assert len(ids) == len(set(ids)), "a record id is duplicated"
    assert len(shas) == len(set(shas)), "an image is stored twice"
    assert len(ids) == m.count
    if m.shards:
        embedder = next(e for e in embedders if e.fingerprint == m.model_fingerprint)
        engine = SearchEngine.open(coll, embedder)
        hits = engine.search_text("a red square", k=len(ids) + 5).hits
        assert {h.id for h in hits} <= set(ids) and len(hits) == len(ids)
    return {"ids": set(ids), "shas": set(shas), "manifest": m, "rows": len(ids)}
