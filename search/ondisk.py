"""On-disk IVF indexes: the inverted lists live in a file that is memory-mapped at open.

FAISS's ``OnDiskInvertedLists`` keep an IVF index's codes and ids in one ``.ivfdata`` file;
only the coarse quantizer (centroids, PQ tables) and the lists' directory are read into memory.
A server's resident memory then grows with the lists its queries touch, not with the collection.

The file is written once and never changed (servers in other processes map it):

* **build** (``build_files``): train on a sample, add the records shard by shard into block
  indexes that fit the memory budget, write each block, merge the blocks' lists into the
  ``.ivfdata`` file (FAISS ``merge_from_multiple``, reading the blocks memory-mapped);
* **adds** after a build go to an in-memory *delta* IVF index sharing the quantizer; saving the
  index merges base and delta lists into a new file (``write_merged``);
* **deletes** are tombstones: a search excludes them with an ID selector; a rebuild (``reindex``,
  or ``compact``, which renames shards) drops them physically;
* ``vectors_of`` / ``item_scores`` read exact vectors from the records (no direct map in RAM);
  so does the exact re-rank of a PQ shortlist (``refine_k``, search/vector_index.py).

GPU: FAISS GPU indexes cannot hold on-disk lists, so an on-disk index always searches on the CPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from search import faiss_backend as fb
from search.faiss_index import FaissIndex
from search.index_base import Found, without
from storage.atomic import atomic_write_with

log = logging.getLogger(__name__)
READ_FLAGS_NAMES = ("IO_FLAG_ONDISK_SAME_DIR", "IO_FLAG_READ_ONLY")
MIN_BLOCK = 10_000


@contextlib.contextmanager
def c_stdout_to_stderr() -> Iterator[None]:
    """FAISS's on-disk lists print progress ("resizing ...", "updating ondisk filename ...") on
    the C stdout; send it to stderr so stdout stays clean (CLI --json output)."""
    try:
        libc = ctypes.CDLL(None)
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no fd 1 (embedded): leave it be
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def _read_flags() -> int:
    f = fb.faiss()
    return int(getattr(f, READ_FLAGS_NAMES[0]) | getattr(f, READ_FLAGS_NAMES[1]))


def _empty_like(trained: Any) -> Any:
    """An empty copy of an in-memory, trained, empty IVF index."""
    if trained.ntotal:
        raise ValueError("template index must be empty")
    return fb.faiss().clone_index(trained)


def empty_from_header(path: Path) -> Any:
    """The trained, empty in-memory IVF index whose quantizer an on-disk index file holds."""
    f = fb.faiss()
    index = fb.read(path, int(f.IO_FLAG_SKIP_IVF_DATA))
    ivf = f.extract_index_ivf(index)
    lists = f.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.own_invlists = False  # the placeholder lists of a skipped read are not ours to free
    ivf.replace_invlists(lists, True)
    lists.this.disown()
    index.ntotal = ivf.ntotal = 0
    return index


class OnDiskIndex(FaissIndex):
    """The on-disk index kind: a memory-mapped IVF ``base`` (immutable), an in-memory ``delta``
    for later adds, and tombstones (record ids) for deletes. ``base_shards``: the shards the
    base file holds; ``lookup(rids)`` reads records' exact vectors (from storage). CPU only."""

    def __init__(
        self,
        base: Any,
        dim: int,
        vectors_per_item: int,
        spec: str,
        *,
        data_file: str,
        template: Any,
        base_shards: list[str],
        lookup: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        super().__init__(base, dim, vectors_per_item, spec, lookup)
        self.data_file = data_file
        self.base_shards = list(base_shards)
        self.template = template
        self.delta = _empty_like(template)
        self.tombstones = np.zeros(0, np.int64)  # record ids (sorted) that searches skip
        self.base_live = int(base.ntotal)  # live vectors of the base (set by ``after_sync``)

    def after_sync(self, shards: list[Any]) -> None:
        """Recount the base's live vectors from the manifest's shards (tombstones included)."""
        held = set(self.base_shards)
        self.base_live = sum(s.live_rows for s in shards if s.file in held) * self.vectors_per_item

    @classmethod
    def open(cls, path: Path, dim: int, vectors_per_item: int, spec: str, **kwargs: Any) -> OnDiskIndex:
        with c_stdout_to_stderr():
            base = fb.read(path, _read_flags())
        return cls(base, dim, vectors_per_item, spec, template=empty_from_header(path), **kwargs)

    def _inner(self) -> Any:
        return fb.faiss().extract_index_ivf(self.cpu)

    @property
    def ntotal(self) -> int:
        return self.base_live + int(self.delta.ntotal)

    def add(self, ids: np.ndarray, embeddings: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            self.delta.add_with_ids(vecs, self.faiss_ids(ids))

    def remove(self, ids: np.ndarray) -> int:
        """Tombstone records (the base file is never changed); vectors in the delta are removed."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return 0
        fids = np.ascontiguousarray(self.faiss_ids(ids))
        with self._lock:
            removed = int(self.delta.remove_ids(fb.faiss().IDSelectorBatch(fids)))
            new = np.setdiff1d(ids, self.tombstones)
            if new.size:
                self.tombstones = np.union1d(self.tombstones, new)
            return removed + int(new.size)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        params: Any | None = None,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        refine_k: int | None = None,
    ) -> Found:
        allowed, excluded = without(allowed, excluded, self.tombstones)  # tombstoned: exclude by record id
        return super().search(queries, k, params=params, allowed=allowed, excluded=excluded, refine_k=refine_k)

    def _search_vectors(self, queries: np.ndarray, kk: int, params: Any | None) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            args = {} if params is None else {"params": params}
            d1, i1 = self.cpu.search(queries, kk, **args)
            if self.delta.ntotal == 0:
                return d1, i1
            d2, i2 = self.delta.search(queries, kk, **args)
        d = np.concatenate([d1, d2], axis=1)
        i = np.concatenate([i1, i2], axis=1)
        d = np.where(i < 0, -np.inf, d)
        order = np.argsort(-d, axis=1, kind="stable")[:, :kk]
        d, i = np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)
        return np.where(i < 0, -np.float32(np.inf), d).astype(np.float32), i

    def save(self, root: Path, name: str, seq: int, covered: list[str]) -> tuple[str | None, list[str]]:
        """Write the header as ``root/name``; adds since the build are merged with the base into
        a new lists file ``index-<seq>.ivfdata``. Returns (lists file, the shards it holds)."""
        if not self.delta.ntotal:
            atomic_write_with(root / name, lambda p: fb.write(self.cpu, p))
            return self.data_file, self.base_shards
        data_file = f"index-{seq}.ivfdata"
        atomic_write_with(root / name, lambda p: write_merged(self, p, root / data_file))
        return data_file, covered


def block_vectors(budget_bytes: int, dim: int, vectors_per_item: int) -> int:
    """Vectors per build block: a block's float input and its codes stay within a quarter of
    the budget (the rest: quantizer, one shard being read, the merge's mapped pages)."""
    per_vector = dim * 4 * 2 + 16
    return max(MIN_BLOCK, budget_bytes // 4 // per_vector)


def build_files(
    trained: Any,
    parts: Iterable[tuple[np.ndarray, np.ndarray]],
    faiss_ids: Callable[[np.ndarray], np.ndarray],
    dim: int,
    block_max: int,
    data_path: Path,
) -> Any:
    """Add ``parts`` ((ids, embeddings) per shard) block by block and merge the blocks' lists
    into ``data_path``. Returns the index over the merged on-disk lists (``trained`` is untouched)."""
    f = fb.faiss()
    blocks: list[Path] = []
    block = _empty_like(trained)

    def flush() -> None:
        nonlocal block
        if block.ntotal:
            path = data_path.with_name(f"{data_path.name}.block{len(blocks)}.tmp")
            f.write_index(block, str(path))
            blocks.append(path)
        block = _empty_like(trained)

    try:
        for ids, emb in parts:
            vecs = np.ascontiguousarray(emb, dtype=np.float32).reshape(-1, dim)
            block.add_with_ids(vecs, faiss_ids(ids))
            if block.ntotal >= block_max:
                flush()
        flush()
        return merge_lists(trained, [str(p) for p in blocks], data_path)
    finally:
        for p in blocks:
            p.unlink(missing_ok=True)


def merge_lists(trained: Any, sources: list[Any], data_path: Path) -> Any:
    """An index with ``trained``'s quantizer over the merged lists of ``sources`` (block index
    files, read memory-mapped, or live indexes) written to ``data_path``."""
    f = fb.faiss()
    keep: list[Any] = []
    lists = f.InvertedListsPtrVector()
    for src in sources:
        idx = f.read_index(src, f.IO_FLAG_MMAP) if isinstance(src, str) else src
        keep.append(idx)
        lists.push_back(f.extract_index_ivf(idx).invlists)
    out = _empty_like(trained)
    ivf = f.extract_index_ivf(out)
    invlists = f.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(data_path))
    with c_stdout_to_stderr():
        ntotal = invlists.merge_from_multiple(lists.data(), lists.size(), False) if lists.size() else 0
    out.ntotal = ivf.ntotal = int(ntotal)
    ivf.replace_invlists(invlists, True)
    invlists.this.disown()
    del keep
    return out


def write_merged(index: OnDiskIndex, header_path: Path, data_path: Path) -> None:
    """Write ``index`` (base + delta; tombstones stay tombstones) as a new header + data file."""
    sources: list[Any] = [index.cpu]
    if index.delta.ntotal:
        sources.append(index.delta)
    merged = merge_lists(index.template, sources, data_path)
    fb.write(merged, header_path)
