"""An image collection on disk: immutable Parquet shards + a manifest + derived index files.

Layout of ``DATA_DIR/collections/<name>/`` (storage/versions.py)::

    manifest.json            the commit point (storage/manifest.py)
    shard-00000000.parquet   immutable record shards, named by a sequence number
    index-00000003.faiss     the current FAISS index (derived; rebuildable from the shards)
    .writer.lock             inter-process writer lock

Row-alignment contract (tested in tests/test_alignment.py):

* Each record gets its ``id`` at commit, from ``manifest.next_id``, which only grows; ids are
  never reused, and within a shard rows are sorted by id.
* The FAISS id of a record's vector ``q`` is ``id * vectors_per_item + q``: plain ``id`` for BLIP
  (one vector), ``id * 32 + q`` for BLIP-2's 32 query vectors. The owner of a FAISS id is
  ``faiss_id // vectors_per_item``.
* The index entry in the manifest names the shards it covers; its ``ntotal`` equals their
  rows times ``vectors_per_item``. Shards committed after it are added on load (catch-up), so
  a crash between a shard commit and an index save loses nothing.
* Deleting a record tombstones it: its id goes into its shard's ``deleted`` list in the
  manifest (the same atomic commit point), its vectors leave the index, and every read
  (``locate``, ``get_records``, ``iter_embeddings``, filters, dedup hashes) skips it. The row
  stays in the Parquet shard until ``compact`` rewrites the shard without it; compaction keeps
  ids, so the index stays valid across it.
* Model id, fingerprint, dim and index spec are stored with the collection and its index;
  using them with another model is refused.

Writers hold ``.writer.lock`` while they commit, and every commit re-checks ``sha256`` against
what other writers committed meanwhile, so concurrent writers never duplicate an image.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from blipsearch.errors import (
    CollectionNotFoundError,
    ConflictError,
    InvalidInputError,
    ModelMismatchError,
)
from storage import layout, vector_cache, versions
from storage.atomic import atomic_write_with
from storage.edits import CollectionEdits
from storage.lock import writer_lock
from storage.manifest import MANIFEST_NAME, IndexInfo, Manifest, ShardInfo
from storage.reading import _save_npy, live_mask, on_newer_manifest
from storage.schema import build_record_table


class Collection(CollectionEdits):
    """One collection version's folder: owns its manifest (the commit point), the writes that
    commit through it (shards of new records, tombstones, the index entry) under the writer lock,
    the edits of committed records of ``CollectionEdits`` (storage/edits.py: deletes, column
    updates, the OCR setting) and the reads of ``CollectionReads`` (storage/reading.py)."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.name = manifest.collection
        self.manifest = manifest
        self._known_hashes: set[str] | None = None
        self._hashed_shards: dict[str, int] = {}  # shard file -> tombstones seen when hashed
        self._thread_lock = threading.Lock()
        self._swept = False
        # (precision, embed_dtype, embed_runtime) of the writer that opened this collection with Collection.create
        self.writer_precision: tuple[str | None, str | None, str | None] | None = None

    # -- lifecycle ----------------------------------------------------------------------
    @staticmethod
    def path_for(data_dir: Path, name: str, *, new: bool = False) -> Path:
        """``DATA_DIR/collections/<name>`` (a data dir of the earlier layout is moved first)."""
        layout.validate_name(name, new=new)
        layout.ensure_layout(data_dir)
        return versions.live_path(data_dir, name)

    @classmethod
    def exists(cls, data_dir: Path, name: str) -> bool:
        try:
            return (cls.path_for(data_dir, name) / MANIFEST_NAME).is_file()
        except CollectionNotFoundError:  # a reserved name: no collection has it
            return False

    @classmethod
    def open(cls, data_dir: Path, name: str) -> Collection:
        """The live version of collection ``name`` (storage/versions.py); the object stays
        pinned to that version's folder."""
        root = cls.path_for(data_dir, name)
        try:
            real = root.resolve(strict=True)
            manifest = Manifest.load(real / MANIFEST_NAME)
        except FileNotFoundError:
            raise CollectionNotFoundError(
                f"Collection {name!r} does not exist. "
                "Create it by indexing images: blipsearch index PATH --collection NAME"
            ) from None
        return cls(real, manifest)

    @classmethod
    def create(
        cls,
        data_dir: Path,
        name: str,
        *,
        model: dict[str, Any],
        kind: str = "images",
        itm_features: dict[str, Any] | None = None,
    ) -> Collection:
        """Create (or open, if it exists with the same model) a collection for ``model``.
        A new collection starts as the first version of the versioned layout."""
        root = cls.path_for(data_dir, name, new=True)
        with writer_lock(versions.versions_dir(data_dir, name) / ".create.lock"):
            if (root / MANIFEST_NAME).is_file():
                coll = cls.open(data_dir, name)
                coll.check_model(model["fingerprint"], model["model_id"])
                if coll.manifest.kind != kind:
                    raise ConflictError(f"Collection {name!r} holds {coll.manifest.kind}, not {kind}.")
                mine = Manifest.for_model(name, model, kind)  # what this writer's records are built with
                coll.writer_precision = (mine.precision, mine.embed_dtype, mine.embed_runtime)
                return coll
            manifest = Manifest.for_model(name, model, kind, itm_features=itm_features)
            version = versions.new_version_id(model["fingerprint"])
            folder = versions.versions_dir(data_dir, name) / version
            folder.mkdir(parents=True)
            manifest.save(folder / MANIFEST_NAME)
            if root.is_dir() and not root.is_symlink():  # a leftover folder without a manifest
                trash = versions.trash_dir(data_dir) / f"{name}-{uuid.uuid4().hex[:8]}"
                trash.parent.mkdir(parents=True, exist_ok=True)
                root.rename(trash)
            versions.link(data_dir, name, version)
        return cls(folder.resolve(), manifest)

    @classmethod
    def new_version(cls, data_dir: Path, name: str, manifest: Manifest, version: str) -> Collection:
        """An unlinked version folder (reembed builds one, then swaps it in)."""
        folder = versions.versions_dir(data_dir, name) / version
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / MANIFEST_NAME).is_file():
            manifest.save(folder / MANIFEST_NAME)
        return cls(folder.resolve(), Manifest.load(folder / MANIFEST_NAME))

    def check_model(self, fingerprint: str, model_id: str) -> None:
        if fingerprint != self.manifest.model_fingerprint:
            raise ModelMismatchError(
                f"Collection {self.name!r} was embedded with model {self.manifest.model_id!r} "
                f"(fingerprint {self.manifest.model_fingerprint}); {model_id!r} is a different model "
                f"(fingerprint {fingerprint}). A collection never mixes models: use the collection's "
                "model (omit --model), or index into a new collection."
            )

    def reload(self) -> Manifest:
        try:
            self.manifest = Manifest.load(self.root / MANIFEST_NAME)
        except FileNotFoundError:
            raise CollectionNotFoundError(f"Collection {self.name!r} was deleted.") from None
        return self.manifest

    @classmethod
    def destroy(cls, data_dir: Path, name: str) -> None:
        """Delete a collection and all its versions. The live folder is first renamed away
        under the writer lock, so a concurrent writer fails cleanly (CollectionNotFoundError)
        instead of resurrecting it."""
        import shutil

        root = cls.path_for(data_dir, name)
        if not (root / MANIFEST_NAME).is_file():
            raise CollectionNotFoundError(f"Collection {name!r} does not exist.")
        real = root.resolve()
        trash = versions.trash_dir(data_dir) / f"{name}-{uuid.uuid4().hex[:8]}"
        trash.mkdir(parents=True)
        with writer_lock(real / ".writer.lock"):
            if root.is_symlink():
                root.unlink()
                vdir = versions.versions_dir(data_dir, name)
                if vdir.is_dir():
                    vdir.rename(trash / "versions")
            else:
                root.rename(trash / "legacy")
        shutil.rmtree(trash, ignore_errors=True)

    def uri_aliases(self) -> dict[Path, Path]:
        """Server-owned links a stored uri may pass through, mapped to this version's folder:
        uploads are stored through ``DATA_DIR/collections/<name>`` (and, before the collections
        namespace, ``DATA_DIR/<name>``), which follows re-embeds (media/safe_read.py)."""
        real = self.root / "uploads"
        if self.root.parent.name != self.name or self.root.parent.parent.name != versions.VERSIONS:
            return {}  # an unversioned folder: its uris are real paths already
        coll_dir = self.root.parents[2]
        return {coll_dir / self.name / "uploads": real, coll_dir.parent / self.name / "uploads": real}

    def shard_path(self, shard: ShardInfo | str) -> Path:
        return self.root / (shard if isinstance(shard, str) else shard.file)

    # -- writes -------------------------------------------------------------------------
    def sweep_orphans(self) -> list[str]:
        """Delete files no manifest names (a crash's leftovers). Call with the writer lock held."""
        live = {s.file for s in self.manifest.shards} | {s.features for s in self.manifest.shards if s.features}
        live |= set(self.manifest.retired)  # merged away, kept for readers of the previous manifest
        if self.manifest.index:
            live.add(self.manifest.index.file)
            if self.manifest.index.data_file:
                live.add(self.manifest.index.data_file)
        removed = []
        for path in self.root.iterdir():
            n = path.name
            orphan = n.endswith(".tmp") or (n.startswith(("shard-", "index-", "itmfeat-")) and n not in live)
            if orphan and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(n)
        # Derived per-shard caches (exact vectors; a sharded server's Flat files) of shards gone.
        removed += vector_cache.sweep(self.root, live, (vector_cache.CACHE_DIR, vector_cache.FLAT_CACHE_DIR))
        return removed

    def _refresh_hashes(self) -> set[str]:
        """sha256 of live records: new shards are added incrementally; a new tombstone or a
        compacted shard (rare) rebuilds the set, so a deleted image can be added again."""
        shards = {s.file: len(s.deleted) for s in self.manifest.shards}
        if self._known_hashes is None or any(shards.get(f) != n for f, n in self._hashed_shards.items()):
            self._known_hashes, self._hashed_shards = set(), {}
        for shard in self.manifest.shards:
            if shard.file not in self._hashed_shards:
                t = pq.read_table(self.shard_path(shard), columns=["id", "sha256"])
                live = live_mask(shard, t.column("id").to_numpy())
                self._known_hashes.update(np.asarray(t.column("sha256").to_pylist(), dtype=object)[live].tolist())
                self._hashed_shards[shard.file] = len(shard.deleted)
        return self._known_hashes

    def known_hashes(self) -> set[str]:
        """sha256 of every committed record (incrementally cached per shard).

        Read without the writer lock: a merge or compaction may remove a shard this manifest
        names after it was loaded (merged shards outlive one later manifest, not two), so a
        vanished file means a newer manifest exists; read that one instead."""
        with self._thread_lock:
            return on_newer_manifest(
                self, lambda: set(self._refresh_hashes()), reload_first=True, reset=self._forget_hashes
            )

    def _forget_hashes(self) -> None:
        self._known_hashes, self._hashed_shards = None, {}

    def append(
        self, rows: Mapping[str, Sequence[Any]], embeddings: np.ndarray, features: np.ndarray | None = None
    ) -> tuple[list[int], int]:
        """Commit one shard of new records. Returns (new ids, duplicates dropped)."""
        aligned = self.append_aligned(rows, embeddings, features)
        ids = [i for i in aligned if i is not None]
        return ids, len(aligned) - len(ids)

    def append_aligned(
        self,
        rows: Mapping[str, Sequence[Any]],
        embeddings: np.ndarray,
        features: np.ndarray | None = None,
        *,
        replaces: Sequence[tuple[int, str] | None] | None = None,
        tombstones: Mapping[int, str] | None = None,
    ) -> list[int | None]:
        """Commit one shard of new records. Returns each row's new id, or None if dropped.

        ``rows`` has the record columns of the collection's kind (storage/schema.py) except
        id, model_id, embedding and added_at. Rows whose sha256 is already committed (by anyone)
        or repeated within ``rows`` are dropped. ``features`` ([n, tokens, width] ITM vision
        tokens) are stored in a per-shard fp16 file when the collection caches them.

        ``replaces[i]`` = (id, sha256) of the record row ``i`` updates (same uri, new content),
        and ``tombstones`` = {id: sha256} of further records to delete: all are tombstoned in
        this same commit, so an update is never half done.
        """
        n = len(rows["sha256"])
        if embeddings.shape[0] != n or (features is not None and features.shape[0] != n):
            raise InvalidInputError(f"{n} rows but {embeddings.shape[0]} embeddings")
        doomed = dict(tombstones or {})
        doomed.update({r[0]: r[1] for r in (replaces or []) if r is not None})
        with self._thread_lock, writer_lock(self.lock_path):
            self.reload_for_write()
            if not self._swept:
                self.sweep_orphans()
                self._swept = True
            known = self._refresh_hashes()
            keep, seen = [], set()
            for i, h in enumerate(rows["sha256"]):
                if h not in known and h not in seen:
                    keep.append(i)
                    seen.add(h)
            aligned: list[int | None] = [None] * n
            if not keep:
                if doomed and self._tombstone(doomed, known):
                    self.manifest.save(self.root / MANIFEST_NAME)
                return aligned
            m = self.manifest
            if self.writer_precision is not None:
                m.note_writer(*self.writer_precision)
            self._tombstone(doomed, known)
            ids = np.arange(m.next_id, m.next_id + len(keep), dtype=np.int64)
            now = datetime.now(timezone.utc)
            table = build_record_table(m, rows, keep, ids, embeddings[keep], now)
            shard_name = f"shard-{m.next_shard:08d}.parquet"
            feature_name = None
            if m.itm_features is not None and features is not None:
                feature_name = f"itmfeat-{m.next_shard:08d}.npy"
                feats = np.ascontiguousarray(features[keep], dtype=np.float16)
                atomic_write_with(self.root / feature_name, lambda p: _save_npy(p, feats))
            atomic_write_with(self.root / shard_name, lambda p: pq.write_table(table, p, compression="zstd"))
            m.shards.append(
                ShardInfo(
                    file=shard_name, rows=len(keep), min_id=int(ids[0]), max_id=int(ids[-1]), features=feature_name
                )
            )
            m.next_id += len(keep)
            m.next_shard += 1
            m.save(self.root / MANIFEST_NAME)  # the commit point
            known.update(seen)
            self._hashed_shards[shard_name] = 0
            for row, rid in zip(keep, ids.tolist(), strict=True):
                aligned[row] = rid
            return aligned

    def _tombstone(self, doomed: Mapping[int, str], known: set[str]) -> bool:
        """Tombstone live ids of ``doomed`` ({id: sha256}) in the in-memory manifest, keeping
        the hash cache exact (the caller holds the writer lock and saves the manifest)."""
        by_shard: dict[str, list[int]] = {}
        for rid, sha in doomed.items():
            found = self.locate(rid)
            if found is not None:
                by_shard.setdefault(found[0].file, []).append(rid)
                known.discard(sha)
        for shard in self.manifest.shards:
            if shard.file in by_shard:
                shard.deleted = sorted(set(shard.deleted) | set(by_shard[shard.file]))
                if self._hashed_shards.get(shard.file) is not None:
                    self._hashed_shards[shard.file] = len(shard.deleted)
        return bool(by_shard)

    def commit_index(self, info: IndexInfo, previous_file: str | None) -> None:
        """Point the manifest at a freshly written index file (writer lock held by caller)."""
        self.reload_for_write()
        if self.manifest.index and self.manifest.index.file != previous_file:
            raise ConflictError(f"The index of {self.name!r} changed while it was being rebuilt; retry.")
        previous = self.manifest.index
        self.manifest.index = info
        self.manifest.save(self.root / MANIFEST_NAME)
        for old in (previous.file, previous.data_file) if previous else ():
            if old and old not in (info.file, info.data_file):
                (self.root / old).unlink(missing_ok=True)  # a server mapping it keeps its pages until it reopens
