"""``watch`` with a real watcher (watchdog) and real file operations; bounded waits only.
A kill -9 of the watcher process and a restart that catches up."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from blipsearch.errors import InvalidInputError
from indexer.watch import FolderWatcher, WatchOptions
from service.syncing import Syncer
from storage.collection import Collection
from tests.helpers import make_image, write_images

ROOT = Path(__file__).resolve().parents[1]


def _until(cond, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _uris(settings, name: str = "lib") -> dict[str, tuple[int, str]]:
    if not Collection.exists(settings.data_dir, name):
        return {}
    return Collection.open(settings.data_dir, name).live_uris()


def _images(folder: Path) -> set[str]:
    return {str(p.resolve()) for p in folder.rglob("*.jpg") if p.is_file()}


def test_watch_follows_changes_and_never_reads_a_half_written_file(settings, blip_embedder, tmp_path):
    lib = tmp_path / "lib"
    paths = write_images(lib, 3)
    syncer = Syncer(settings, [lib], "lib", embedder=blip_embedder)
    reports = []
    watcher = FolderWatcher(
        syncer.folders,
        syncer.once,
        WatchOptions(debounce_s=0.2, settle_s=0.5, poll_s=0.05),
        on_report=reports.append,
    )
    stop, errors = threading.Event(), []

    def run() -> None:
        try:
            watcher.run(stop)
        except InvalidInputError as exc:
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        _until(lambda: set(_uris(settings)) == _images(lib), what="the first sync")
        before = _uris(settings)
        paths[0].rename(lib / "moved.jpg")
        paths[1].unlink()
        write_images(lib / "sub", 1, start=40)
        _until(lambda: set(_uris(settings)) == _images(lib), what="moves, deletes and new files")
        assert _uris(settings)[str(lib / "moved.jpg")][0] == before[str(paths[0])][0]  # id kept

        # A file written slowly, in pieces (each pause shorter than the settle time): never read half-way.
        big = make_image(7, (600, 400))
        data_path = tmp_path / "full.jpg"
        big.save(data_path, quality=95)
        data = data_path.read_bytes()
        slow = lib / "slow.jpg"
        with open(slow, "wb") as fh:
            for i in range(0, len(data), len(data) // 6):
                fh.write(data[i : i + len(data) // 6])
                fh.flush()
                time.sleep(0.15)
        _until(lambda: str(slow) in _uris(settings), what="the slowly written file")
        failures = [f for r in reports for f in r.failures]
        assert not [f for f in failures if f["path"] == str(slow)], failures
        assert set(_uris(settings)) == _images(lib)

        # The watched folder is deleted: a one-line error, the records kept.
        count = Collection.open(settings.data_dir, "lib").manifest.count
        shutil.rmtree(lib)
        t.join(30)
        assert not t.is_alive() and errors and "was deleted" in str(errors[0])
        assert Collection.open(settings.data_dir, "lib").manifest.count == count
    finally:
        stop.set()
        t.join(10)


@pytest.mark.slow
def test_watch_killed_with_sigkill_catches_up_on_restart(settings, tiny_models, tmp_path):
    lib = tmp_path / "lib"
    paths = write_images(lib, 3)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "BLIPSEARCH_MODEL": str(tiny_models["blip-itm"]),
        "BLIPSEARCH_PRECISION": "exact",
    }
    cmd = [sys.executable, "-m", "cli", "watch", str(lib), "--collection", "lib", "--data-dir", str(settings.data_dir)]
    cmd += ["--debounce", "0.2", "--settle", "0.3"]

    def start() -> subprocess.Popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    proc = start()
    try:
        _until(lambda: set(_uris(settings)) == _images(lib) or proc.poll() is not None, 120, "the first sync")
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        before = _uris(settings)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # changed while no watcher ran
        paths[0].rename(lib / "renamed.jpg")
        paths[1].unlink()
        write_images(lib, 2, start=50)
        proc = start()
        _until(lambda: set(_uris(settings)) == _images(lib) or proc.poll() is not None, 120, "the catch-up sync")
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert _uris(settings)[str(lib / "renamed.jpg")][0] == before[str(paths[0])][0]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
