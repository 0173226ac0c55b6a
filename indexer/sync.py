"""``sync``: make a collection equal to its folders in one run.

For the folders given (each a real folder, not a symlink), in this order:

1. **Scan**: every file one ``scandir`` walk finds (hidden names skipped, symlinked folders not
   followed, symlinked files kept only when they point inside the folders) is stat'ed once; a
   file whose size, mtime and inode equal what the last sync recorded (storage/sync_state.py)
   keeps its recorded sha256 without being read. Other files are hashed, then stat'ed again: a
   file that changed meanwhile (still being written) is *deferred*: left as it is this run, and
   its record (if any) kept. With ``settle_s`` a file modified less than that long ago is
   deferred too (``watch`` uses it).
2. **Moves**: a record whose file is gone while its sha256 is now at a path no record has gets that
   path as its new uri (``update_columns``: same id, same embedding, no re-embed).
3. **Deletes**: a record under the folders whose file is gone (``stat`` says it does not exist) is
   tombstoned. A record whose file exists but was not reached by the walk (it sits under a
   symlinked or unreadable folder) is kept and reported.
4. **Index**: new files, and files whose content changed, go through the indexing pipeline with
   its update rules (indexer/updates.py: the old record of a changed file is tombstoned in the
   same commit that adds the new one). A new copy of content already indexed is only recorded as
   a copy (records are unique by sha256; the copies are the "exact" tier of ``duplicates``).
5. The index is refreshed and the state saved (atomically; a crash at any point leaves the
   records consistent, and the next sync redoes what the state missed).

A file that fails to index (not an image, corrupt) is a per-file failure, recorded with its stat so
an unchanged one is not read again each run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blipsearch.errors import InvalidInputError
from indexer.commit import IndexReport
from indexer.sources.base import SourceItem
from search import index_store
from storage import sync_state
from storage.collection import Collection
from storage.lock import writer_lock
from storage.sync_state import FileEntry, is_racy

log = logging.getLogger(__name__)
SYNC_LOCK = ".sync.lock"
IndexRun = Callable[[Collection, list[SourceItem]], IndexReport]


@dataclass
class SyncReport:
    collection: str
    folders: list[str]
    files: int = 0
    unchanged: int = 0  # stat equal to the last sync: not read
    hashed: int = 0
    added: int = 0
    updated: int = 0  # changed content at a path already indexed (old record tombstoned)
    moved: int = 0  # records given a new uri (same id, no re-embed)
    deleted: int = 0  # records tombstoned: their file is gone
    copies: int = 0  # files holding content indexed at another path
    deferred: int = 0  # files changing while read (or modified within the settle time): next run
    failed: int = 0
    kept_unreached: int = 0  # records whose file exists but the walk did not reach
    failures: list[dict[str, str]] = field(default_factory=list)
    moves: list[dict[str, Any]] = field(default_factory=list)
    deleted_ids: list[int] = field(default_factory=list)
    new_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_folders(paths: Sequence[str | Path]) -> list[Path]:
    """Each path as an absolute, resolved folder; a one-line InvalidInputError for anything else.
    A folder that is missing is refused rather than synced as empty: an unmounted disk must not
    tombstone a library."""
    if not paths:
        raise InvalidInputError("Give at least one folder to sync.")
    out: list[Path] = []
    for raw in paths:
        p = Path(os.path.abspath(Path(raw).expanduser()))
        if p.is_symlink():
            raise InvalidInputError(f"{str(raw)!r} is a symlink, not a folder: sync the folder it points to.")
        if not p.exists():
            raise InvalidInputError(
                f"{str(raw)!r} does not exist (deleted or not mounted?); nothing was changed. "
                "To remove its records, delete them: blipsearch delete IDS --collection NAME"
            )
        if not p.is_dir():
            raise InvalidInputError(f"{str(raw)!r} is not a folder (sync takes folders; index takes files).")
        real = p.resolve()
        if real not in out:
            out.append(real)
    return out


def under(path: str, roots: Sequence[Path]) -> bool:
    return any(path.startswith(f"{r}{os.sep}") for r in roots)


def file_sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class _Scan:
    """Step 1: the files under the folders now, hashed where their stat changed.

    One ``os.scandir`` walk per folder (sorted, hidden names skipped, symlinked folders not
    followed, as indexer/sources/files.py ``walk``). The folders are resolved once
    (``check_folders``) and no symlinked folder is entered, so a regular file's path is already
    its real path: it costs one ``lstat`` (the DirEntry's) and no ``realpath``. Only a symlinked
    file is resolved, and kept only when its target is a regular file inside the folders (and
    not in ``exclude``), under the target's path, as the walk yields it."""

    def __init__(
        self,
        roots: list[Path],
        old: dict[str, FileEntry],
        settle_s: float,
        report: SyncReport,
        exclude: Sequence[Path] = (),
    ) -> None:
        self.roots = roots
        self.exclude = list(exclude)
        self._excluded = {str(p) for p in self.exclude}
        self.present: dict[str, FileEntry] = {}
        self.deferred: set[str] = set()
        self._old, self._settle_s, self._report = old, settle_s, report
        self._now_ns = time.time_ns()
        for root in roots:
            if str(root) in self._excluded or under(str(root), self.exclude):
                continue
            self._walk(str(root))

    def _walk(self, folder: str) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError:  # unreadable (or gone): its records are kept and reported as unreached
            return
        subdirs: list[str] = []
        for e in entries:
            try:
                if e.is_symlink():
                    self._link(e.path)
                elif e.is_dir(follow_symlinks=False):
                    if e.path not in self._excluded:
                        subdirs.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    self._file(e.path, e.stat(follow_symlinks=False))
            except FileNotFoundError:  # gone since the folder was listed
                continue
            except OSError as exc:
                self._unreadable(e.path, exc)
        for d in subdirs:
            self._walk(d)

    def _link(self, path: str) -> None:
        """A symlinked file: its target, when that is a regular file inside the folders."""
        real = os.path.realpath(path)
        if not under(real, self.roots) or under(real, self.exclude):
            return
        try:
            st = os.stat(real)
        except OSError:  # dangling, or a loop: not a file (the folder walk skips it too)
            return
        if stat.S_ISREG(st.st_mode):
            self._file(real, st)

    def _unreadable(self, path: str, exc: OSError) -> None:
        self._report.files += 1
        self._report.failed += 1
        self._report.failures.append({"path": path, "error": f"unreadable: {exc.strerror or exc}", "reason": "io"})
        self.deferred.add(path)  # its record (if any) is kept

    def _file(self, path: str, st: os.stat_result) -> None:
        if path in self.present or path in self.deferred:  # reached twice (a symlink to it)
            return
        report = self._report
        report.files += 1
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        entry = self._old.get(path)
        if entry is not None and entry.same_stat(*key):
            report.unchanged += 1
            self.present[path] = entry
            return
        if self._settle_s > 0 and self._now_ns - st.st_mtime_ns < self._settle_s * 1e9:
            report.deferred += 1
            self.deferred.add(path)
            return
        try:
            sha = file_sha256(path)
            after = os.stat(path)
        except FileNotFoundError:  # deleted while read
            report.files -= 1
            return
        except OSError as exc:
            report.files -= 1
            self._unreadable(path, exc)
            return
        report.hashed += 1
        if (after.st_size, after.st_mtime_ns, after.st_ino) != key:  # written to while read
            report.deferred += 1
            self.deferred.add(path)
            return
        self.present[path] = FileEntry(*key, sha256=sha, racy=is_racy(st.st_mtime_ns, time.time_ns()))


def _gone(uri: str) -> bool:
    """True when ``uri`` no longer exists (not when it exists but is unreadable or unreached)."""
    try:
        os.stat(uri)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def sync_folders(
    coll: Collection,
    paths: Sequence[str | Path],
    index_run: IndexRun,
    *,
    settle_s: float = 0.0,
    policy: index_store.IndexPolicy | None = None,
    exclude: Sequence[Path] = (),
) -> SyncReport:
    """Make ``coll`` equal to the folders ``paths`` (see the module). ``index_run`` indexes a list
    of new or changed files into ``coll`` (the pipeline with update rules and path tracking);
    ``exclude``: folders never indexed (the data dir, when it lies inside a synced folder)."""
    t0 = time.perf_counter()
    roots = check_folders(paths)
    report = SyncReport(coll.name, [str(r) for r in roots])
    with writer_lock(coll.root / SYNC_LOCK):
        old = sync_state.load(coll.root)
        scan = _Scan(roots, old, settle_s, report, [Path(p).resolve() for p in exclude])
        present = scan.present
        records = coll.live_uris()
        mine = {u: r for u, r in records.items() if under(u, roots) and not under(u, scan.exclude)}
        # Step 2/3: records whose file is gone: moved (same content at a path no record has) or deleted.
        free: dict[str, list[str]] = {}
        for path, e in present.items():
            if path not in records and e.failed is None:
                free.setdefault(e.sha256, []).append(path)
        moves: dict[int, str] = {}
        doomed: list[int] = []
        for uri, (rid, sha) in sorted(mine.items()):
            if uri in present or uri in scan.deferred:
                continue
            if free.get(sha):
                moves[rid] = free[sha].pop(0)
            elif _gone(uri):
                doomed.append(rid)
            else:
                report.kept_unreached += 1
                report.failures.append(
                    {"path": uri, "error": "exists but the folder walk did not reach it (a symlinked or "
                     "unreadable folder): its record is kept", "reason": "unreached"}
                )  # fmt: skip
        _apply_moves(coll, moves, report, {r: u for u, (r, _) in mine.items()})
        if doomed:
            deleted, _ = coll.delete(doomed)
            report.deleted, report.deleted_ids = len(deleted), deleted
        # Step 4: new and changed files.
        known = coll.known_hashes()
        moved_to = set(moves.values())
        todo: list[SourceItem] = []
        for path, e in present.items():
            if path in moved_to or e.failed is not None:
                continue
            rec = records.get(path)
            if rec is not None and rec[1] == e.sha256:
                continue
            if e.sha256 in known and rec is None:
                report.copies += 1
                continue
            todo.append(SourceItem(path, path=Path(path)))
        for path, e in present.items():
            if e.failed is not None:  # failed before and unchanged since: not read again
                report.failed += 1
                report.failures.append({"path": path, "error": "failed earlier, unchanged since", "reason": e.failed})
        if todo:
            ix = index_run(coll, todo)
            report.added, report.updated, report.new_ids = ix.added, ix.updated, ix.new_ids
            report.copies += ix.skipped_duplicates
            report.failed += ix.failed
            report.failures.extend(ix.failures)
            for f in ix.failures:
                path = f["path"]
                if path in present:
                    if _restat(path) == present[path].key:
                        present[path] = _failed(present[path], f.get("reason") or "error")
                    else:  # replaced while the pipeline read it: looked at again next run
                        del present[path]
                        scan.deferred.add(path)
                        report.deferred += 1
        # A file now unreadable (or not an image) that had a record of older content: that record is stale.
        stale = [records[p][0] for p, e in present.items() if e.failed and p in records and records[p][1] != e.sha256]
        if stale:
            deleted, _ = coll.delete(stale)
            report.deleted += len(deleted)
            report.deleted_ids += deleted
            doomed += deleted
        if todo or moves or doomed:
            index_store.refresh(coll, policy=policy)
        # Step 5: the state of these folders is what was seen now; other folders' entries stay.
        kept = {p: e for p, e in old.items() if not under(p, roots)}
        state = {**kept, **present}
        if state != old:  # an unchanged folder costs no rewrite of the state
            sync_state.save(coll.root, state)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _restat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _failed(e: FileEntry, reason: str) -> FileEntry:
    return FileEntry(e.size, e.mtime_ns, e.ino, e.sha256, failed=reason, racy=e.racy)


def _apply_moves(coll: Collection, moves: dict[int, str], report: SyncReport, old_uri: dict[int, str]) -> None:
    """New uris of moved records, one shard rewrite per shard (ids and embeddings unchanged)."""
    by_shard: dict[str, dict[int, dict[str, Any]]] = {}
    for rid, uri in moves.items():
        found = coll.locate(rid)
        if found is not None:
            by_shard.setdefault(found[0].file, {})[rid] = {"uri": uri}
    for shard, values in by_shard.items():
        coll.update_columns(shard, values)
        for rid, v in values.items():
            report.moved += 1
            report.moves.append({"id": rid, "from": old_uri.get(rid), "to": v["uri"]})
