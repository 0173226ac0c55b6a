"""Compaction: rewrite shards that hold tombstones, without the tombstoned rows, then merge
runs of small shards (storage/merging.py) when ``small_rows`` is given.

Ids never change, so the FAISS index (which no longer holds the deleted vectors) stays valid:
its ``covered_shards`` are renamed to the new shard files in the same manifest commit. Old
files are removed only after that commit; a crash before it leaves the old state intact plus
orphans the next writer sweeps.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage import faults
from storage.atomic import atomic_write_with
from storage.collection import Collection
from storage.lock import writer_lock
from storage.manifest import MANIFEST_NAME, ShardInfo
from storage.reading import _save_npy, live_mask

log = logging.getLogger(__name__)


@dataclass
class CompactReport:
    collection: str
    shards_rewritten: int = 0
    shards_removed: int = 0
    rows_removed: int = 0
    files_removed: list[str] = field(default_factory=list)
    shards_merged: int = 0  # small shards merged into ``shards_written_by_merge`` shards
    shards_written_by_merge: int = 0


def _write_npy(path: Path, array: np.ndarray) -> None:
    _save_npy(path, np.ascontiguousarray(array))


def _write_parquet(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path, compression="zstd")


def compact(coll: Collection, *, small_rows: int | None = None, target_rows: int = 4096) -> CompactReport:
    report = CompactReport(coll.name)
    _drop_tombstones(coll, report)
    if small_rows is not None:
        from storage.merging import merge_all

        merged = merge_all(coll, small_rows=small_rows, target_rows=target_rows)
        report.shards_merged = merged.shards_merged
        report.shards_written_by_merge = merged.shards_written
    return report


def _drop_tombstones(coll: Collection, report: CompactReport) -> None:
    with writer_lock(coll.lock_path):
        m = coll.reload_for_write()
        renamed: dict[str, str | None] = {}
        shards: list[ShardInfo] = []
        for shard in m.shards:
            if not shard.deleted:
                shards.append(shard)
                continue
            table = pq.read_table(coll.shard_path(shard))
            keep = live_mask(shard, table.column("id").to_numpy())
            report.rows_removed += int((~keep).sum())
            report.files_removed += [f for f in (shard.file, shard.features) if f]
            if not keep.any():
                renamed[shard.file] = None
                report.shards_removed += 1
                continue
            table = table.filter(pa.array(keep))
            name = f"shard-{m.next_shard:08d}.parquet"
            feature_name = None
            if shard.features:
                feats = np.load(coll.root / shard.features, mmap_mode="r")[keep]
                feature_name = f"itmfeat-{m.next_shard:08d}.npy"
                atomic_write_with(coll.root / feature_name, functools.partial(_write_npy, array=feats))
            atomic_write_with(coll.root / name, functools.partial(_write_parquet, table=table))
            ids = table.column("id").to_numpy()
            shards.append(
                ShardInfo(file=name, rows=len(ids), min_id=int(ids[0]), max_id=int(ids[-1]), features=feature_name)
            )
            renamed[shard.file] = name
            m.next_shard += 1
            report.shards_rewritten += 1
        if not renamed:
            return
        m.shards = shards
        if m.index is not None:
            covered = [renamed.get(f, f) for f in m.index.covered_shards]
            m.index.covered_shards = [f for f in covered if f is not None]
        m.save(coll.root / MANIFEST_NAME)  # the commit point
        for name in report.files_removed:
            (coll.root / name).unlink(missing_ok=True)
            faults.step(f"removed {name}")
    log.info("compacted %s: %d rows removed", coll.name, report.rows_removed)
