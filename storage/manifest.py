"""The collection manifest: the single commit point of a collection's on-disk state.

A shard or index file exists for readers only once the manifest names it. The manifest is
replaced atomically, so a reader always sees a consistent set of files.
"""

from __future__ import annotations

import bisect
import itertools
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from blipsearch.errors import StorageError
from storage.atomic import atomic_write_bytes

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


class ShardRef(BaseModel):
    """A shard that was merged into another: its name and id range."""

    file: str
    min_id: int
    max_id: int


class ShardInfo(BaseModel):
    file: str
    rows: int
    min_id: int
    max_id: int
    features: str | None = None  # per-shard fp16 ITM vision tokens, if the collection caches them
    deleted: list[int] = Field(default_factory=list)  # tombstoned record ids (sorted)
    merged_from: list[ShardRef] = Field(default_factory=list)  # the shards this one merged (storage/merging.py)

    @property
    def live_rows(self) -> int:
        return self.rows - len(self.deleted)

    def is_deleted(self, rid: int) -> bool:
        pos = bisect.bisect_left(self.deleted, rid)
        return pos < len(self.deleted) and self.deleted[pos] == rid


class IndexInfo(BaseModel):
    """What a saved FAISS index was built from. Refuse to use it with anything else."""

    file: str
    spec: str
    metric: str = "inner_product"
    model_id: str
    model_fingerprint: str
    dim: int
    vectors_per_item: int
    ntotal: int
    covered_shards: list[str]
    built_at: datetime
    auto: bool = True  # chosen by size (search/index_choice.py), not by an explicit --index-spec
    search_defaults: dict[str, int] = Field(default_factory=dict)  # e.g. {"nprobe": 16}, tuned at build
    # On-disk IVF (search/ondisk.py): the memory-mapped inverted-lists file beside ``file``, and the
    # shards it holds (their tombstones are skipped at search time until a rebuild).
    data_file: str | None = None
    base_shards: list[str] = Field(default_factory=list)

    @property
    def on_disk(self) -> bool:
        return self.data_file is not None


class Manifest(BaseModel):
    format_version: int = FORMAT_VERSION
    collection: str
    kind: str = "images"
    model_id: str
    model_fingerprint: str
    model_family: str
    dim: int
    vectors_per_item: int
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    next_id: int = 0
    next_shard: int = 0
    shards: list[ShardInfo] = Field(default_factory=list)
    index: IndexInfo | None = None
    itm_features: dict[str, Any] | None = None  # {"tokens": N, "width": D, "dtype": "float16"} when cached
    index_spec: str | None = None  # an explicit --index-spec, kept across rebuilds (None: automatic)
    index_on_disk: bool | None = None  # an explicit --on-disk / --in-memory (None: by size and memory budget)
    superseded_by: str | None = None  # set when a re-embedded version replaced this one (storage/versions.py)
    reembed: dict[str, Any] | None = None  # while being built by reembed: {"source": version, "done": [shards]}
    retired: list[str] = Field(default_factory=list)  # files of merged shards, removed at the next merge
    # The precision mode the embeddings were built with ("exact", "fast", or "mixed" once writers
    # in both modes appended), and what the embedding forward computed in ("fp32", "bf16", ...).
    # None: built before blipsearch recorded it.
    precision: str | None = None
    embed_dtype: str | None = None
    # What ran the embedding forward: "torch" or "openvino" (the fast runtime, models/fast_runtime.py),
    # "mixed" once writers with both appended; None: not recorded.
    embed_runtime: str | None = None
    # OCR on for this collection ({"engine": "rapidocr", "min_confidence": 0.5}, set by index --ocr or
    # ocr --collection): new records (index, uploads, sync) get OCR text. None: off.
    ocr: dict[str, Any] | None = None

    @classmethod
    def for_model(cls, collection: str, model: dict[str, Any], kind: str = "images", **fields: Any) -> Manifest:
        """A new manifest for ``model`` (an ``Embedder.describe()`` dict)."""
        return cls(
            collection=collection,
            model_id=model["model_id"],
            model_fingerprint=model["fingerprint"],
            model_family=model["family"],
            dim=model["dim"],
            vectors_per_item=model["vectors_per_image"] if kind == "images" else 1,
            kind=kind,
            precision=model.get("precision"),
            embed_dtype=(model.get("stage_dtypes") or {}).get("text" if kind == "texts" else "image"),
            embed_runtime=(model.get("stage_runtimes") or {}).get("text" if kind == "texts" else "image"),
            **fields,
        )

    def note_writer(self, precision: str | None, embed_dtype: str | None, embed_runtime: str | None = None) -> bool:
        """Record that a writer with this precision appends; True if the manifest changed.

        An empty collection takes the writer's values; a different writer on a non-empty one
        makes it "mixed" (search still works: the vectors are the same model's).
        """
        if precision is None:
            return False
        before = (self.precision, self.embed_dtype, self.embed_runtime)
        if not self.shards:
            self.precision, self.embed_dtype, self.embed_runtime = precision, embed_dtype, embed_runtime
            return before != (precision, embed_dtype, embed_runtime)
        if self.precision not in (None, "mixed") and (self.precision, self.embed_dtype) != (precision, embed_dtype):
            self.precision = "mixed"
            self.embed_dtype = None if self.embed_dtype != embed_dtype else self.embed_dtype
        if self.embed_runtime is not None and embed_runtime is not None and self.embed_runtime != embed_runtime:
            self.embed_runtime = "mixed"
        return before != (self.precision, self.embed_dtype, self.embed_runtime)

    @property
    def count(self) -> int:
        """Live records (tombstoned ones excluded)."""
        return sum(s.live_rows for s in self.shards)

    @property
    def deleted_count(self) -> int:
        return sum(len(s.deleted) for s in self.shards)

    def summary(self) -> dict[str, Any]:
        """The collection as ``collections`` (CLI) and ``GET /v1/collections`` (API) describe it."""
        return {
            "name": self.collection,
            "kind": self.kind,
            "count": self.count,
            "model_id": self.model_id,
            "dim": self.dim,
            "vectors_per_item": self.vectors_per_item,
            "index": self.index.spec if self.index else None,
            "itm_features": self.itm_features is not None,
            "created_at": self.created_at.isoformat(),
            "precision": self.precision,
            "embed_dtype": self.embed_dtype,
            "embed_runtime": self.embed_runtime,
        }

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            manifest = cls.model_validate(data)
        except FileNotFoundError:
            raise
        except (OSError, ValueError, ValidationError) as exc:
            raise StorageError(f"Collection manifest {path} is unreadable or invalid: {exc}") from exc
        if manifest.format_version > FORMAT_VERSION:
            raise StorageError(
                f"{path} has format version {manifest.format_version}; this blipsearch reads up to "
                f"{FORMAT_VERSION}. Upgrade blipsearch."
            )
        return manifest

    def check_consistent(self) -> None:
        """Refuse a manifest that lists a shard file twice or two shards with overlapping ids:
        saved, it would count and return those records twice, on every open."""
        files = [s.file for s in self.shards]
        if len(set(files)) != len(files):
            twice = sorted({f for f in files if files.count(f) > 1})
            raise StorageError(f"Refusing to commit a manifest of {self.collection!r} listing {twice} twice.")
        spans = sorted((s.min_id, s.max_id, s.file) for s in self.shards)
        for (_, hi, a), (lo, _, b) in itertools.pairwise(spans):
            if lo <= hi:
                raise StorageError(
                    f"Refusing to commit a manifest of {self.collection!r} whose shards {a} and {b} overlap in ids."
                )

    def save(self, path: Path) -> None:
        self.check_consistent()
        atomic_write_bytes(path, self.model_dump_json(indent=2).encode("utf-8"))
