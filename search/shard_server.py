"""One index shard of every collection, as a shard process serves it (Ray Serve: api/ray_serve.py).

A sharded server deals each collection's Parquet shards round-robin over N index shards
(``search.sharded.split``). Shard number ``i`` answers exact top-k searches over the records of
the Parquet shards dealt to it; the router merges the N top-k lists exactly
(``search.sharded.merge_topk``).

Storage: Parquet shards are immutable, so each one gets an exact (Flat) FAISS index of all its
rows, written once beside the records (``<collection version>/flatcache/<shard>.faiss``, atomic,
on the storage every node reads) and memory-mapped at open: a shard process's memory is page
cache for the vectors its queries scan, not a private copy, and a replacement replica opens them
without rebuilding. Tombstones are applied at query time (an ID selector), so a delete never
rewrites an index file.

The router sends, with every query, the Parquet shards (their manifest entries, tombstones
included) it wants searched: the shard serves exactly the router's view of the collection, never
a newer or older one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from blipsearch.errors import CollectionReplacedError, InvalidInputError
from search import faiss_backend as fb
from search.index_base import without
from search.sharded import merge_topk
from search.specs import FLAT_SPEC
from search.vector_index import VectorIndex
from storage.atomic import atomic_write_with
from storage.collection import Collection
from storage.manifest import ShardInfo
from storage.vector_cache import FLAT_CACHE_DIR, cache_dir, regular_file

log = logging.getLogger(__name__)
SHARD_SPEC = FLAT_SPEC  # exact: the merge of exact per-shard top-k is the exact global top-k


class ShardServer:
    """Shard ``shard_no`` of ``n_shards`` of every collection under ``data_dir``."""

    def __init__(self, data_dir: Path, shard_no: int, n_shards: int) -> None:
        if not 0 <= shard_no < n_shards:
            raise InvalidInputError(f"shard {shard_no} is not one of 0..{n_shards - 1}")
        self.data_dir = Path(data_dir)
        self.shard_no = shard_no
        self.n_shards = n_shards
        # (collection, version folder) -> Parquet file -> its memory-mapped index
        self._open: dict[tuple[str, str], dict[str, VectorIndex]] = {}
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
        """Top-``k`` (ids, scores) over the live records of ``shards`` (manifest entries, as
        ``ShardInfo`` or its dict) of ``collection``'s ``version``."""
        entries = [s if isinstance(s, ShardInfo) else ShardInfo.model_construct(**s) for s in shards]
        indexes = self._indexes(collection, version, entries)
        q = np.asarray(queries, np.float32)
        parts = []
        for entry in entries:
            ok, no = without(allowed, excluded, np.asarray(entry.deleted, np.int64))  # tombstones, per query
            parts.append(indexes[entry.file].search(q, k, allowed=ok, excluded=no))
        return merge_topk(parts, k)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            held = {
                name: {"files": len(files), "stored_vectors": sum(ix.ntotal for ix in files.values())}
                for (name, _), files in self._open.items()
            }
        return {"shard": self.shard_no, "shards": self.n_shards, "collections": held}

    def _indexes(self, name: str, version: str, shards: list[ShardInfo]) -> dict[str, VectorIndex]:
        with self._lock:
            opened = self._open.get((name, version))
            if opened is not None and all(s.file in opened for s in shards):
                return dict(opened)
            coll = Collection.open(self.data_dir, name)
            if coll.root.name != version:
                raise CollectionReplacedError(
                    f"Collection {name!r} is now version {coll.root.name}, not {version}: the router reopens it."
                )
            for key in [key for key in self._open if key[0] == name and key[1] != version]:
                del self._open[key]  # an older version: its files are no longer asked for
            opened = self._open.setdefault((name, version), {})
            wanted = {s.file for s in shards}
            for file in [f for f in opened if f not in wanted]:
                del opened[file]  # merged or compacted away
            for shard in shards:
                if shard.file not in opened:  # new to this shard server: check the entry once
                    opened[shard.file] = self._open_file(coll, ShardInfo.model_validate(shard.model_dump()))
            return dict(opened)  # a snapshot: a later view may drop files this query still searches

    def _open_file(self, coll: Collection, shard: ShardInfo) -> VectorIndex:
        """The memory-mapped Flat index of every row of Parquet ``shard`` (written on first use)."""
        m = coll.manifest
        folder = cache_dir(coll.root, FLAT_CACHE_DIR)
        path = (folder or coll.root / FLAT_CACHE_DIR) / (Path(shard.file).stem + ".faiss")
        faiss = fb.faiss()
        if folder is not None and regular_file(path):
            try:
                cpu = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
                if cpu.ntotal == shard.rows * m.vectors_per_item and cpu.d == m.dim:
                    return VectorIndex(cpu, m.dim, m.vectors_per_item, SHARD_SPEC)
            except RuntimeError as exc:
                log.warning("rebuilding the unreadable shard index %s: %s", path, exc)
        index = VectorIndex.empty(SHARD_SPEC, m.dim, m.vectors_per_item)
        everything = shard.model_copy(update={"deleted": []})  # all rows; tombstones apply per query
        for ids, emb in coll.iter_embeddings([everything]):
            index.add(ids, emb)
        if folder is None:  # no usable cache folder (a symlink was planted there): keep it in memory
            return index
        atomic_write_with(path, lambda p: faiss.write_index(index.cpu, str(p)))
        log.info("shard %d/%d: wrote %s (%d vectors)", self.shard_no, self.n_shards, path, index.ntotal)
        cpu = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        return VectorIndex(cpu, m.dim, m.vectors_per_item, SHARD_SPEC)
