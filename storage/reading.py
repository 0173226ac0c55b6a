"""Read paths of a collection version: records, embeddings, lookups by id.

Every read skips tombstoned records (storage/collection.py has the row-alignment contract).
``Collection`` mixes these in; they use only ``root``, ``manifest`` and ``reload``.

Reads take no lock: a merge or a compaction may remove a shard the loaded manifest names (a
merged shard outlives one later manifest, not two). A vanished file therefore means a newer
manifest exists, and every read here runs through ``on_newer_manifest``: it reloads the
manifest and reads again (ids never change across a merge or a compaction, so the answer is
the same records).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from blipsearch.errors import StorageError
from storage.manifest import Manifest, ShardInfo
from storage.schema import embeddings_from_arrow, record_schema
from storage.vector_cache import shard_vectors


@lru_cache(maxsize=256)
def _read_meta(path: str, mtime_ns: int) -> pa.Table:
    """Non-embedding columns of an immutable shard (cached; the key includes mtime). Read with
    ``ParquetFile``, not ``pq.read_table``: the latter goes through ``pyarrow.dataset``, whose
    import loads pandas (about 0.5 s of a ``blipsearch search`` start)."""
    with pq.ParquetFile(path) as f:
        return f.read(columns=[c for c in f.schema_arrow.names if c != "embedding"])


def shard_meta(coll: CollectionReads, shard: ShardInfo) -> pa.Table:
    """A shard's non-embedding columns (cached while the file is unchanged)."""
    path = coll.shard_path(shard)
    return _read_meta(str(path), path.stat().st_mtime_ns)


T = TypeVar("T")
READ_ATTEMPTS = 20


def on_newer_manifest(
    coll: CollectionReads,
    read: Callable[[], T],
    *,
    reload_first: bool = False,
    reset: Callable[[], None] | None = None,
) -> T:
    """``read()``, again on a newer manifest each time a shard file it reads has vanished (a
    merge or a compaction removed it after the manifest was loaded); ``reset`` drops state built
    from the old manifest first. ``reload_first``: read the newest manifest before the first try.
    A collection deleted meanwhile raises CollectionNotFoundError (from ``reload``)."""
    for attempt in range(READ_ATTEMPTS):
        if reload_first or attempt:
            coll.reload()
        try:
            return read()
        except FileNotFoundError:
            if attempt == READ_ATTEMPTS - 1:
                break
            if reset is not None:
                reset()
    name = getattr(coll, "name", coll.root.name)
    raise StorageError(f"The shards of {name!r} kept changing while they were read; retry.")


def live_mask(shard: ShardInfo, ids: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``shard`` (given their ids) that are not tombstoned."""
    if not shard.deleted:
        return np.ones(len(ids), dtype=bool)
    return ~np.isin(ids, np.asarray(shard.deleted, dtype=np.int64))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a handle, so numpy does not append ".npy" to the temp name
        np.save(fh, array, allow_pickle=False)


class CollectionReads:
    root: Path
    manifest: Manifest

    def shard_path(self, shard: ShardInfo | str) -> Path:
        return self.root / (shard if isinstance(shard, str) else shard.file)

    def reload(self) -> Manifest:
        raise NotImplementedError

    def live_uris(self) -> dict[str, tuple[int, str]]:
        """uri → (id, sha256) of every live record (the newest, if a uri has several), as of
        the newest manifest."""
        return on_newer_manifest(self, self._live_uris, reload_first=True)

    def _live_uris(self) -> dict[str, tuple[int, str]]:
        out: dict[str, tuple[int, str]] = {}
        for shard in self.manifest.shards:
            t = shard_meta(self, shard).select(["id", "uri", "sha256"])
            if shard.deleted:
                t = t.filter(pa.array(live_mask(shard, t.column("id").to_numpy())))
            ids, uris, shas = (t.column(c).to_pylist() for c in ("id", "uri", "sha256"))
            out.update(zip(uris, zip(ids, shas, strict=True), strict=True))
        return out

    def iter_embeddings(self, shards: Iterable[ShardInfo] | None = None) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """(ids [n], embeddings) per shard, in commit order. A generator cannot be read again
        from its start once it has yielded: callers that need a retry on a newer manifest go
        through ``all_embeddings`` (or ``on_newer_manifest``)."""
        m = self.manifest
        for shard in self.manifest.shards if shards is None else shards:
            t = pq.read_table(self.shard_path(shard), columns=["id", "embedding"])
            ids = t.column("id").to_numpy()
            emb = embeddings_from_arrow(t.column("embedding"), m.dim, m.vectors_per_item)
            if shard.deleted:
                keep = live_mask(shard, ids)
                ids, emb = ids[keep], emb[keep]
            yield ids, emb

    def all_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        return on_newer_manifest(self, self._all_embeddings)

    def _all_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        parts = list(self.iter_embeddings())
        if not parts:
            m = self.manifest
            shape = (0, m.dim) if m.vectors_per_item == 1 else (0, m.vectors_per_item, m.dim)
            return np.zeros(0, np.int64), np.zeros(shape, np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def sample_vectors(self, n: int, seed: int = 0) -> np.ndarray:
        """Up to ``n`` vectors, drawn uniformly from all records (for training quantizers).

        Reads one shard at a time (memory: the sample plus one shard), so it also serves
        collections larger than RAM; the draw equals sampling the concatenated vectors."""
        return on_newer_manifest(self, lambda: self._sample_vectors(n, seed))

    def _sample_vectors(self, n: int, seed: int) -> np.ndarray:
        m = self.manifest
        total = sum(s.live_rows for s in m.shards) * m.vectors_per_item
        if total <= n:
            return self._all_embeddings()[1].reshape(-1, m.dim)
        pick = np.random.default_rng(seed).choice(total, n, replace=False)
        order = np.argsort(pick, kind="stable")
        wanted = pick[order]
        out = np.empty((n, m.dim), np.float32)
        start = 0
        for _, emb in self.iter_embeddings():
            vecs = emb.reshape(-1, m.dim)
            lo, hi = np.searchsorted(wanted, [start, start + len(vecs)])
            out[order[lo:hi]] = vecs[wanted[lo:hi] - start]
            start += len(vecs)
        return out

    def embeddings_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Stored embeddings of record ``ids`` ([n, dim] or [n, v, dim]), one row read per id
        from the shards' memory-mapped vector cache (storage/vector_cache.py). Raises KeyError
        for an id no live record has."""
        return on_newer_manifest(self, lambda: self._embeddings_of(ids))

    def _embeddings_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        m = self.manifest
        ids = np.asarray(ids, dtype=np.int64)
        shape = (len(ids), m.dim) if m.vectors_per_item == 1 else (len(ids), m.vectors_per_item, m.dim)
        out = np.empty((len(ids), m.dim * m.vectors_per_item), np.float32)
        shards = m.shards
        pos = np.searchsorted(np.array([s.min_id for s in shards], np.int64), ids, side="right") - 1
        for p in np.unique(pos):
            rows = np.flatnonzero(pos == p)
            if p < 0:
                raise KeyError(int(ids[rows[0]]))
            col, vecs = shard_vectors(self.root, shards[p], m.dim, m.vectors_per_item)
            at = np.minimum(np.searchsorted(col, ids[rows]), len(col) - 1)
            bad = (col[at] != ids[rows]) | ~live_mask(shards[p], ids[rows])
            if bad.any():
                raise KeyError(int(ids[rows][bad][0]))
            order = np.argsort(at, kind="stable")  # read the mapped rows in file order
            out[rows[order]] = vecs[at[order]]
        return out.reshape(shape)

    def read_table(self, columns: list[str] | None = None) -> pa.Table:
        """Live records (tombstones dropped) of every shard, in id order."""
        return on_newer_manifest(self, lambda: self._read_table(columns))

    def _read_table(self, columns: list[str] | None) -> pa.Table:
        schema = record_schema(self.manifest)
        if columns:
            schema = pa.schema([schema.field(c) for c in columns])
        tables = []
        for shard in self.manifest.shards:
            path = self.shard_path(shard)
            present = set(pq.read_schema(path).names)
            t = pq.read_table(path, columns=sorted({*schema.names, "id"} & present))
            if shard.deleted:
                t = t.filter(pa.array(live_mask(shard, t.column("id").to_numpy())))
            for f in schema:  # shards written before a column existed read it as nulls
                if f.name not in present:
                    t = t.append_column(f, pa.nulls(t.num_rows, f.type))
            tables.append(t.select(schema.names))
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def locate(self, rid: int) -> tuple[ShardInfo, int] | None:
        """(shard, row within it) of record ``rid``, or None if no committed record has that id."""
        return on_newer_manifest(self, lambda: self._locate(rid))

    def _locate(self, rid: int) -> tuple[ShardInfo, int] | None:
        shards = self.manifest.shards
        pos = bisect.bisect_right([s.min_id for s in shards], int(rid)) - 1
        if pos < 0 or int(rid) > shards[pos].max_id:
            return None
        path = self.shard_path(shards[pos])
        if shards[pos].is_deleted(int(rid)):
            return None
        col = _read_meta(str(path), path.stat().st_mtime_ns).column("id").to_numpy()
        row = int(np.searchsorted(col, int(rid)))
        return (shards[pos], row) if row < len(col) and col[row] == rid else None

    def get_records(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Metadata rows (no embedding) for ``ids``; unknown ids are absent from the result."""
        return on_newer_manifest(self, lambda: self._get_records(ids))

    def _get_records(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for rid in ids:
            found = self._locate(int(rid))
            if found is not None:
                path = self.shard_path(found[0])
                meta = _read_meta(str(path), path.stat().st_mtime_ns)
                out[int(rid)] = {k: v[0] for k, v in meta.slice(found[1], 1).to_pydict().items()}
        return out
