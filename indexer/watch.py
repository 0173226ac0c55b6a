"""``watch``: ``sync`` (indexer/sync.py) run continuously as folders change.

* **Catch-up first**: the run starts with a sync, so a watcher killed (even with kill -9) and
  restarted indexes what changed while it was down; every commit is atomic, so a kill leaves at
  worst an uncommitted batch that this first sync redoes.
* **Debounced, batched**: file events (watchdog: inotify, FSEvents, ReadDirectoryChangesW, or
  polling) only mark the folders dirty; a sync runs once no event came for ``debounce_s`` (or
  ``max_wait_s`` after the first one, under a steady stream), and commits the whole batch.
* **Files still being written** are not read half-way: a sync defers a file modified less than
  ``settle_s`` ago, or one that changed while it was hashed, and the watcher syncs again after the
  settle time.
* **Missed events** (an overflowing event queue, a network share): a full sync every ``rescan_s``.
* A watched folder deleted, replaced by a symlink or unmounted stops the watcher with a one-line
  error (InvalidInputError); its records are kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blipsearch.errors import InvalidInputError
from indexer.sync import SyncReport, check_folders

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchOptions:
    debounce_s: float = 1.0
    settle_s: float = 2.0
    rescan_s: float = 300.0
    max_wait_s: float = 30.0
    poll_s: float = 0.5  # how often the folders themselves are checked (deleted, now a symlink)


def _require_watchdog() -> Any:
    try:
        from watchdog.observers import Observer
    except ImportError:
        raise InvalidInputError(
            "watch needs the watchdog package: pip install 'blipsearch[watch]' (scripts/setup.sh installs it)."
        ) from None
    return Observer


class FolderWatcher:
    """Runs ``sync(settle_s=...)`` on ``folders`` at start and after each batch of changes."""

    def __init__(
        self,
        folders: Sequence[Path],
        sync: Callable[..., SyncReport],
        options: WatchOptions = WatchOptions(),
        *,
        ignore: Sequence[Path] = (),
        on_report: Callable[[SyncReport], None] | None = None,
    ) -> None:
        self.folders = list(folders)
        self.sync = sync
        self.options = options
        self.ignore = [str(Path(p).resolve()) for p in ignore]
        self.on_report = on_report
        self.rounds = 0
        self._wake = threading.Event()
        self._first_event: float | None = None
        self._last_event = 0.0
        self._lock = threading.Lock()

    # -- events (watchdog's thread) -----------------------------------------------------------
    def _event(self, event: Any) -> None:
        paths = [str(getattr(event, "src_path", "")), str(getattr(event, "dest_path", "") or "")]
        if all(not p or any(p == i or p.startswith(i + "/") for i in self.ignore) for p in paths):
            return  # the collection's own files, when the data dir lies inside a watched folder
        now = time.monotonic()
        with self._lock:
            self._first_event = self._first_event or now
            self._last_event = now
        self._wake.set()

    def _handler(self) -> Any:
        from watchdog.events import FileSystemEventHandler

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.event_type not in ("opened", "closed_no_write"):
                    watcher._event(event)

        return Handler()

    # -- the loop (calling thread) ------------------------------------------------------------
    def _check_folders(self) -> None:
        for f in self.folders:
            if f.is_symlink() or not f.is_dir():
                state = "is now a symlink" if f.is_symlink() else "was deleted (or unmounted)"
                raise InvalidInputError(f"Watched folder {str(f)!r} {state}; stopped. Its records are kept.")

    def _round(self) -> SyncReport:
        self._check_folders()
        check_folders(self.folders)
        report = self.sync(settle_s=self.options.settle_s)
        self.rounds += 1
        if self.on_report is not None:
            self.on_report(report)
        return report

    def run(self, stop: threading.Event | None = None) -> None:
        """Watch until ``stop`` is set (or Ctrl-C); raises InvalidInputError when a folder goes."""
        stop = stop or threading.Event()
        opts = self.options
        observer_cls = _require_watchdog()
        observer = observer_cls()
        handler = self._handler()
        for f in self.folders:
            observer.schedule(handler, str(f), recursive=True)
        observer.start()  # before the first sync: nothing changed during it is missed
        try:
            report = self._round()
            retry_at = time.monotonic() + opts.settle_s if report.deferred else None
            last_sync = time.monotonic()
            while not stop.is_set():
                self._wake.wait(opts.poll_s)
                self._wake.clear()
                self._check_folders()
                now = time.monotonic()
                with self._lock:
                    first, last = self._first_event, self._last_event
                quiet = first is not None and (now - last >= opts.debounce_s or now - first >= opts.max_wait_s)
                due = (retry_at is not None and now >= retry_at) or now - last_sync >= opts.rescan_s
                if not (quiet or due):
                    continue
                with self._lock:
                    if self._first_event == first:
                        self._first_event = None
                report = self._round()
                last_sync = time.monotonic()
                retry_at = last_sync + opts.settle_s if report.deferred else None
        finally:
            observer.stop()
            observer.join(5)
