"""One index shard of every collection, as a shard process serves it (Ray Serve: api/ray_serve.py).

A sharded server deals each collection's Parquet shards round-robin over N index shards
(``search.sharded.split``). Shard number ``i`` keeps an exact (Flat) index over the records of
the Parquet shards dealt to it, read from storage every node can read, and answers top-k
searches over them; the router merges the N top-k lists exactly (``search.sharded.merge_topk``).

The router sends, with every query, the Parquet shards (their manifest entries, tombstones
included) it wants searched: the shard serves exactly the router's view of the collection, never
a newer or older one. Between queries the shard catches up incrementally: new Parquet shards
are added, new tombstones removed; a shard that disappeared (merged, compacted) or a re-embedded
collection rebuilds the shard's index from the records.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blipsearch.errors import CollectionReplacedError, InvalidInputError
from search.vector_index import VectorIndex
from storage.collection import Collection
from storage.manifest import ShardInfo

log = logging.getLogger(__name__)
SHARD_SPEC = "IDMap2,Flat"  # exact: the merge of exact per-shard top-k is the exact global top-k


@dataclass
class _Part:
    """What one collection's part of this shard holds: the version folder, the Parquet shards
    added (file -> tombstones applied), and the index over them."""

    version: str
    index: VectorIndex
    files: dict[str, int] = field(default_factory=dict)


class ShardServer:
    """Shard ``shard_no`` of ``n_shards`` of every collection under ``data_dir``."""

    def __init__(self, data_dir: Path, shard_no: int, n_shards: int) -> None:
        if not 0 <= shard_no < n_shards:
            raise InvalidInputError(f"shard {shard_no} is not one of 0..{n_shards - 1}")
        self.data_dir = Path(data_dir)
        self.shard_no = shard_no
        self.n_shards = n_shards
        self._parts: dict[str, _Part] = {}
        self._lock = threading.Lock()

    def search(
        self,
        collection: str,
        version: str,
        shards: Sequence[dict[str, Any] | ShardInfo],
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (ids, scores) over the records of ``shards`` of ``collection``'s ``version``."""
        infos = [s if isinstance(s, ShardInfo) else ShardInfo.model_validate(s) for s in shards]
        index = self._index(collection, version, infos)
        return index.search(np.asarray(queries, np.float32), k, allowed=allowed, excluded=excluded)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            held = {name: {"vectors": p.index.ntotal, "files": len(p.files)} for name, p in self._parts.items()}
        return {"shard": self.shard_no, "shards": self.n_shards, "collections": held}

    def _index(self, name: str, version: str, shards: list[ShardInfo]) -> VectorIndex:
        with self._lock:  # one catch-up at a time; searches of a caught-up part take no lock in FAISS
            part = self._parts.get(name)
            wanted = {s.file: len(s.deleted) for s in shards}
            if part is not None and part.version == version and part.files == wanted:
                return part.index
            coll = Collection.open(self.data_dir, name)
            if coll.root.name != version:
                raise CollectionReplacedError(
                    f"Collection {name!r} is now version {coll.root.name}, not {version}: the router reopens it."
                )
            if part is None or part.version != version or not set(part.files) <= set(wanted):
                m = coll.manifest
                part = _Part(version, VectorIndex.empty(SHARD_SPEC, m.dim, m.vectors_per_item))
                log.info("shard %d/%d: building %s (%s)", self.shard_no, self.n_shards, name, version)
            self._catch_up(coll, part, shards)
            self._parts[name] = part
            return part.index

    @staticmethod
    def _catch_up(coll: Collection, part: _Part, shards: list[ShardInfo]) -> None:
        """Add the Parquet shards ``part`` lacks; remove records tombstoned since."""
        for shard in shards:
            seen = part.files.get(shard.file)
            if seen is None:
                for ids, emb in coll.iter_embeddings([shard]):
                    part.index.add(ids, emb)
            elif seen < len(shard.deleted):
                part.index.remove(np.asarray(shard.deleted, np.int64))
            part.files[shard.file] = len(shard.deleted)
