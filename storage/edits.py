"""Edits of a collection's committed records, in place, each one commit under the writer lock:
tombstones (``delete``), column updates of existing rows (captions, OCR text, hashes: the shard is
rewritten under its own name, so the index, which covers shards by name, stays valid), and the
collection's OCR setting. ``Collection`` (storage/collection.py) owns the manifest and the writes
of new records; this is the part of it that changes what is already there."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from blipsearch.errors import ConflictError, InvalidInputError, StorageError
from storage.atomic import atomic_write_with
from storage.lock import writer_lock
from storage.manifest import MANIFEST_NAME, Manifest
from storage.reading import CollectionReads
from storage.schema import record_schema

IMMUTABLE = frozenset({"id", "embedding", "sha256"})


class CollectionEdits(CollectionReads):
    """Deletes, column updates and the OCR setting of one collection version (see the module)."""

    name: str
    _thread_lock: threading.Lock

    @property
    def lock_path(self) -> Path:
        return self.root / ".writer.lock"

    def reload_for_write(self) -> Manifest:
        """``reload``, refusing to write to a version that a re-embed has replaced."""
        m = self.reload()
        if m.superseded_by:
            raise ConflictError(
                f"Collection {self.name!r} was re-embedded (now version {m.superseded_by}) while this job ran; "
                "nothing was written to the old version. Re-run the command: it continues on the new one."
            )
        return m

    def delete(self, ids: Iterable[int]) -> tuple[list[int], list[int]]:
        """Tombstone records. Returns (deleted ids, ids that were unknown or already deleted).

        One manifest commit for the whole call; the index drops the vectors when it next syncs
        (search/index_store.py), and every read skips them from this commit on.
        """
        wanted = sorted({int(i) for i in ids})
        with self._thread_lock, writer_lock(self.lock_path):
            self.reload_for_write()
            done: dict[str, list[int]] = {}
            missing = []
            for rid in wanted:
                found = self.locate(rid)
                if found is None:
                    missing.append(rid)
                else:
                    done.setdefault(found[0].file, []).append(rid)
            if done:
                for shard in self.manifest.shards:
                    if shard.file in done:
                        shard.deleted = sorted(set(shard.deleted) | set(done[shard.file]))
                self.manifest.save(self.root / MANIFEST_NAME)
            return sorted(r for rs in done.values() for r in rs), missing

    def update_columns(self, shard_file: str, values: Mapping[int, Mapping[str, Any]]) -> int:
        """Set columns of existing records in one shard (e.g. captions), atomically.

        ``values`` maps record id → {column: value}; embeddings and ids cannot change. The
        shard is rewritten under the same name (temp file + rename), so the index, which
        covers shards by name, stays valid. Returns the number of rows changed.
        """
        if not values:
            return 0
        with self._thread_lock, writer_lock(self.lock_path):
            self.reload_for_write()
            shard = next((sh for sh in self.manifest.shards if sh.file == shard_file), None)
            if shard is None:
                raise StorageError(f"Shard {shard_file} is not part of collection {self.name!r}")
            path = self.shard_path(shard)
            table = pq.read_table(path)
            ids = table.column("id").to_pylist()
            columns = {c for v in values.values() for c in v}
            if columns & IMMUTABLE:
                raise InvalidInputError("id, sha256 and embedding are immutable")
            rows = [row for row, rid in enumerate(ids) if rid in values]
            expected = record_schema(self.manifest)
            for col in columns:
                if col not in table.column_names and col in expected.names:  # a column the shard predates
                    table = table.append_column(expected.field(col), pa.nulls(table.num_rows, expected.field(col).type))
                data = table.column(col).to_pylist()
                for row in rows:
                    if col in values[ids[row]]:
                        data[row] = values[ids[row]][col]
                field = table.schema.field(col)
                table = table.set_column(table.schema.get_field_index(col), field, pa.array(data, field.type))
            atomic_write_with(path, lambda p: pq.write_table(table, p, compression="zstd"))
            return len(rows)

    def set_ocr(self, options: dict[str, Any] | None) -> None:
        """Turn OCR of new records on (``{"engine", "min_confidence"}``) or off (None)."""
        with self._thread_lock, writer_lock(self.lock_path):
            m = self.reload_for_write()
            if m.ocr != options:
                m.ocr = options
                m.save(self.root / MANIFEST_NAME)
