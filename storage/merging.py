"""Merging small shards: many small commits (one per upload request) become few shards.

Every upload request commits its own shard, so a busy collection collects hundreds of tiny
Parquet files, and anything that walks the shards (dedup hashes, record lookups, index
catch-up) slows down with their number. Merging concatenates a run of *contiguous* shards
into one:

* rows are copied as they are, tombstoned rows included (their ids stay in the merged
  shard's ``deleted`` list; ``compact`` is what drops them), so ids never change and the
  FAISS index stays valid: the manifest renames the merged shards to the new one in the
  index's ``covered_shards``, and the new shard names its parents in ``merged_from``, so a
  live engine renames its own bookkeeping instead of reloading (search/index_store.py);
* contiguous shards have contiguous, sorted id ranges, so the merged shard keeps the
  "sorted by id, non-overlapping ranges" contract that ``locate`` relies on;
* it is one manifest commit (the commit point, storage/manifest.py): new files are written
  first (temp file + rename), the manifest that names them replaces the old one atomically,
  and only then are files removed. A kill before the commit leaves the old state plus
  orphans the next writer sweeps; after it, nothing is lost or duplicated. The parents are
  kept as ``retired`` until the next merge, so a reader still holding the previous manifest
  can finish reading them.

``merge_tail`` is the cheap policy run after each upload commit: when the newest ``fanin``
shards are all small, they merge, together with any older small neighbour that is no larger
than what is newer than it (a size-tiered rule, so every row is rewritten O(log n) times and
the tail stays at most ``fanin`` + log2(``small_rows``) small shards). ``merge_all`` (used by
``compact``) merges every run of small shards into shards of up to ``target_rows`` rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage import faults
from storage.atomic import atomic_write_with
from storage.collection import Collection
from storage.lock import is_held, reembed_lock_path, writer_lock
from storage.manifest import MANIFEST_NAME, Manifest, ShardInfo, ShardRef
from storage.reading import _save_npy

log = logging.getLogger(__name__)


@dataclass
class MergeReport:
    collection: str
    shards_merged: int = 0
    shards_written: int = 0
    rows_copied: int = 0
    merged: list[tuple[list[str], str]] = field(default_factory=list)  # (parents, new shard)


def _kind(shard: ShardInfo, covered: set[str]) -> tuple[bool, bool]:
    """Shards merge only with shards of the same kind: covered (or not) by the saved index,
    with (or without) cached ITM features."""
    return shard.file in covered, shard.features is not None


def _covered(m: Manifest) -> set[str]:
    return set(m.index.covered_shards) if m.index is not None else set()


def plan_tail(shards: Sequence[ShardInfo], covered: set[str], small_rows: int, fanin: int) -> list[int]:
    """Positions of the tail shards to merge now (empty: nothing to do)."""
    fanin = max(fanin, 2)
    if len(shards) < fanin:
        return []
    kind = _kind(shards[-1], covered)
    start = len(shards)
    while start > 0 and shards[start - 1].rows < small_rows and _kind(shards[start - 1], covered) == kind:
        start -= 1
    if len(shards) - start < fanin:
        return []
    first = len(shards) - fanin
    total = sum(s.rows for s in shards[first:])
    while first > start and shards[first - 1].rows <= total:
        first -= 1
        total += shards[first].rows
    return list(range(first, len(shards)))


def plan_all(shards: Sequence[ShardInfo], covered: set[str], small_rows: int, target_rows: int) -> list[list[int]]:
    """Groups of contiguous small shards of one kind, each up to ``target_rows`` rows."""
    groups: list[list[int]] = []
    current: list[int] = []
    rows = 0
    for i, shard in enumerate(shards):
        joinable = (
            shard.rows < small_rows
            and current
            and _kind(shard, covered) == _kind(shards[current[-1]], covered)
            and rows + shard.rows <= max(target_rows, small_rows)
        )
        if joinable:
            current.append(i)
            rows += shard.rows
            continue
        if len(current) > 1:
            groups.append(current)
        current, rows = ([i], shard.rows) if shard.rows < small_rows else ([], 0)
    if len(current) > 1:
        groups.append(current)
    return groups


def _write_merged(coll: Collection, m: Manifest, parents: list[ShardInfo]) -> ShardInfo | None:
    """Write one shard (and its feature file) holding ``parents``' rows; None if their
    schemas differ (written by different versions: left alone)."""
    tables = [pq.read_table(coll.shard_path(s)) for s in parents]
    if any(not t.schema.equals(tables[0].schema) for t in tables[1:]):
        return None
    table = pa.concat_tables(tables).combine_chunks()
    name = f"shard-{m.next_shard:08d}.parquet"
    feature_name = None
    if all(s.features for s in parents):
        feats = np.concatenate([np.load(coll.root / str(s.features), mmap_mode="r") for s in parents])
        feature_name = f"itmfeat-{m.next_shard:08d}.npy"
        atomic_write_with(coll.root / feature_name, lambda p: _save_npy(p, feats))
    atomic_write_with(coll.root / name, lambda p: pq.write_table(table, p, compression="zstd"))
    m.next_shard += 1
    deleted = sorted({rid for s in parents for rid in s.deleted})
    return ShardInfo(
        file=name,
        rows=table.num_rows,
        min_id=parents[0].min_id,
        max_id=parents[-1].max_id,
        features=feature_name,
        deleted=deleted,
        merged_from=[ShardRef(file=s.file, min_id=s.min_id, max_id=s.max_id) for s in parents],
    )


def _merge_groups(coll: Collection, m: Manifest, groups: list[list[int]], report: MergeReport) -> None:
    """Rewrite ``groups`` (positions in ``m.shards``) and commit; the caller holds the writer lock."""
    replaced: dict[int, ShardInfo | None] = {}  # position -> new shard (first of a group) or None
    renamed: dict[str, str] = {}
    retired: list[str] = []
    for group in groups:
        parents = [m.shards[i] for i in group]
        merged = _write_merged(coll, m, parents)
        if merged is None:
            continue
        replaced.update({i: None for i in group})
        replaced[group[0]] = merged
        renamed.update({s.file: merged.file for s in parents})
        retired += [f for s in parents for f in (s.file, s.features) if f]
        report.shards_merged += len(parents)
        report.shards_written += 1
        report.rows_copied += merged.rows
        report.merged.append(([s.file for s in parents], merged.file))
    if not replaced:
        return
    shards: list[ShardInfo] = []
    for i, shard in enumerate(m.shards):
        if i not in replaced:
            shards.append(shard)
        elif replaced[i] is not None:
            shards.append(replaced[i])  # type: ignore[arg-type]
    m.shards = shards
    if m.index is not None:
        covered: list[str] = []
        for f in m.index.covered_shards:
            new = renamed.get(f, f)
            if new not in covered:
                covered.append(new)
        m.index.covered_shards = covered
    doomed, m.retired = list(m.retired), retired
    m.save(coll.root / MANIFEST_NAME)  # the commit point
    live = {s.file for s in m.shards} | {s.features for s in m.shards if s.features} | set(m.retired)
    for name in doomed:
        if name not in live:
            (coll.root / name).unlink(missing_ok=True)
            faults.step(f"removed {name}")


def merge_tail(coll: Collection, *, small_rows: int = 1024, fanin: int = 8) -> MergeReport:
    """Merge the newest small shards when ``fanin`` of them have piled up (cheap otherwise:
    one manifest read under the writer lock)."""
    report = MergeReport(coll.name)
    if is_held(reembed_lock_path(coll.root)):  # a re-embed copies shards by name: merging waits for it
        return report
    with coll._thread_lock, writer_lock(coll.lock_path):
        m = coll.reload_for_write()
        group = plan_tail(m.shards, _covered(m), small_rows, fanin)
        if group:
            _merge_groups(coll, m, [group], report)
    if report.shards_merged:
        log.info("merged %d small shards of %s into 1", report.shards_merged, coll.name)
    return report


def merge_all(coll: Collection, *, small_rows: int = 1024, target_rows: int = 4096) -> MergeReport:
    """Merge every run of contiguous small shards (``compact``)."""
    report = MergeReport(coll.name)
    with coll._thread_lock, writer_lock(coll.lock_path):
        m = coll.reload_for_write()
        groups = plan_all(m.shards, _covered(m), small_rows, target_rows)
        if groups:
            _merge_groups(coll, m, groups, report)
    return report
