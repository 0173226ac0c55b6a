"""Committing indexed rows as shards and counting each outcome into the job's report: the one
write path of the local pipeline (indexer/pipeline.py) and the Ray executor
(indexer/executors/ray_data.py), so both apply the same update rules (indexer/updates.py) and
report the same counts for the same input."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from indexer.stages import StageTimer
from indexer.updates import UriUpdates
from storage.collection import Collection


@dataclass
class IndexReport:
    collection: str
    added: int = 0
    skipped_duplicates: int = 0
    failed: int = 0
    updated: int = 0  # of ``added``: new content at a uri already indexed (old record tombstoned)
    removed_stale: int = 0  # records whose uri now holds content already indexed elsewhere
    failures: list[dict[str, str]] = field(default_factory=list)
    new_ids: list[int] = field(default_factory=list)
    timings: dict[str, object] = field(default_factory=dict)
    job_id: str | None = None
    ids_by_path: dict[str, int] = field(default_factory=dict)  # filled when the pipeline tracks paths
    # records added whose OCR hit a bound or failed (they are indexed; the reason is in ocr_error)
    ocr_failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.added + self.skipped_duplicates + self.failed


class ShardCommitter:
    """Counts failed, duplicate and new items into ``report`` and commits each shard of new
    rows, with the tombstones the update rules left, in one manifest commit."""

    def __init__(
        self,
        coll: Collection,
        report: IndexReport,
        updates: UriUpdates,
        timer: StageTimer,
        *,
        track_paths: bool = False,
    ) -> None:
        self.coll = coll
        self.report = report
        self.updates = updates
        self.timer = timer
        self.track_paths = track_paths

    def failed(self, uri: str, error: str, reason: str) -> None:
        self.report.failed += 1
        self.report.failures.append({"path": uri, "error": error, "reason": reason})

    def duplicate(self, uri: str, sha256: str | None) -> None:
        """``uri`` holds content already indexed (committed, or earlier in this run)."""
        self.report.skipped_duplicates += 1
        self.updates.duplicate(uri, sha256)

    def new(self, uri: str, sha256: str | None) -> tuple[int, str] | None:
        """A row to commit for ``uri``: the (id, sha256) of the record it replaces, if any."""
        return self.updates.new(uri, sha256)

    def commit(
        self,
        cols: Mapping[str, Sequence[Any]],
        embeddings: np.ndarray,
        features: np.ndarray | None = None,
        replaces: Sequence[tuple[int, str] | None] = (),
    ) -> None:
        """Commit ``cols`` (record columns, ``uri`` and ``sha256`` among them) with their
        embeddings as one shard, with any stale records tombstoned; count what landed."""
        stale = self.updates.take_stale()
        uris = list(cols["uri"])
        if not uris and not stale:
            return
        report = self.report
        with self.timer.time("write", len(uris)):
            aligned = self.coll.append_aligned(cols, embeddings, features, replaces=list(replaces), tombstones=stale)
        ids = [i for i in aligned if i is not None]
        report.added += len(ids)
        report.skipped_duplicates += len(aligned) - len(ids)
        report.updated += sum(1 for r, i in zip(replaces, aligned, strict=True) if i is not None and r is not None)
        report.removed_stale += len(stale)
        report.new_ids.extend(ids)
        if self.track_paths:
            report.ids_by_path.update({u: i for u, i in zip(uris, aligned, strict=True) if i is not None})
