"""Exact vectors by record id without reading whole Parquet shards: a memory-mapped cache.

Reading a few records' stored embeddings from Parquet decodes the whole embedding column of
each shard they live in (4 MB for a 4,096-row shard of 256-d vectors), which made exact
re-ranks over many shards (IVF-PQ refine, ITM re-rank depth, on-disk and sharded indexes) cost
about a shard read per candidate. Parquet shards are immutable, so each gets, on first use, a
derived cache beside the records: ``vectors/<shard>.npy`` (float32 rows, in the shard's row
order) and ``vectors/<shard>.ids.npy`` (its record ids), written atomically and memory-mapped:
a lookup then reads one row (1 KB for 256-d) per candidate from the page cache.

The cache is derived data: it is checked against the manifest entry's row count and the
collection's dimensions at open (a mismatched, truncated or symlinked file is rebuilt from the
Parquet shard), and files of shards that no longer exist are swept with the writer's orphans.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from storage.atomic import atomic_write_with
from storage.manifest import ShardInfo
from storage.schema import embeddings_from_arrow

log = logging.getLogger(__name__)
CACHE_DIR = "vectors"
FLAT_CACHE_DIR = "flatcache"  # a sharded server's per-shard Flat indexes (search/shard_server.py)


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a handle, so numpy does not append ".npy" to the temp name
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def regular_file(path: Path) -> bool:
    """A regular file, not a symlink (never follow one planted in a cache folder)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def cache_dir(root: Path, name: str) -> Path | None:
    """``root/name``, created if missing; None if that name is taken by anything but a real
    directory (a symlink planted there must not redirect the cache's reads or writes)."""
    folder = root / name
    try:
        folder.mkdir(exist_ok=True)
        return folder if stat.S_ISDIR(os.lstat(folder).st_mode) else None
    except OSError:  # read-only storage, or a file where the folder should be
        return None


@lru_cache(maxsize=4096)
def _mapped(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """A read-only memory map of an .npy file (cached per file version)."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _open(path: Path) -> np.ndarray | None:
    if not regular_file(path):
        return None
    st = path.stat()
    try:
        return _mapped(str(path), st.st_mtime_ns, st.st_size)
    except (OSError, ValueError) as exc:
        log.warning("rebuilding the vector cache file %s: %s", path, exc)
        return None


def shard_vectors(root: Path, shard: ShardInfo, dim: int, vectors_per_item: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [rows], vectors [rows, vectors_per_item * dim]) of every row of Parquet ``shard``
    (tombstoned rows included: callers apply ``shard.deleted``), memory-mapped."""
    width = dim * vectors_per_item
    folder = cache_dir(root, CACHE_DIR)
    base = (folder or root / CACHE_DIR) / Path(shard.file).stem
    vec_path, id_path = base.with_suffix(".npy"), base.with_suffix(".ids.npy")
    vecs, ids = (_open(vec_path), _open(id_path)) if folder is not None else (None, None)
    ok = (
        vecs is not None
        and ids is not None
        and vecs.dtype == np.float32
        and vecs.shape == (shard.rows, width)
        and ids.dtype == np.int64
        and ids.shape == (shard.rows,)
    )
    if ok:
        return ids, vecs  # type: ignore[return-value]
    t = pq.read_table(root / shard.file, columns=["id", "embedding"])
    col_ids = t.column("id").to_numpy().astype(np.int64)
    emb = embeddings_from_arrow(t.column("embedding"), dim, vectors_per_item).reshape(len(col_ids), width)
    if folder is None:  # no usable cache folder: serve from memory
        return col_ids, emb
    try:
        atomic_write_with(vec_path, lambda p: _save(p, emb.astype(np.float32)))
        atomic_write_with(id_path, lambda p: _save(p, col_ids))
    except OSError as exc:  # read-only storage, a full disk, a sweep racing us: serve from memory
        log.warning("cannot write the vector cache of %s: %s", shard.file, exc)
        return col_ids, emb
    mapped_ids, mapped_vecs = _open(id_path), _open(vec_path)
    if mapped_ids is None or mapped_vecs is None:  # not a regular file even now: serve from memory
        return col_ids, emb
    return mapped_ids, mapped_vecs


def sweep(root: Path, live: set[str], folders: tuple[str, ...] = (CACHE_DIR,), tmp_age_s: float = 3600) -> list[str]:
    """Delete the files in ``folders`` (derived per-shard caches named ``<shard stem>.…``) whose
    Parquet shard is not in ``live`` (file names), and temp files older than ``tmp_age_s`` (a
    younger one may be a reader's write in flight). Called by the writer with its lock held."""
    stems = {Path(f).stem for f in live}
    removed = []
    now = time.time()
    for name in folders:
        folder = root / name
        try:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                continue
        except OSError:
            continue
        for path in folder.iterdir():
            if not regular_file(path):
                continue
            if path.name.endswith(".tmp"):
                stale = now - path.lstat().st_mtime > tmp_age_s
            else:
                stale = path.name.split(".")[0] not in stems
            if stale:
                path.unlink(missing_ok=True)
                removed.append(f"{name}/{path.name}")
    return removed
