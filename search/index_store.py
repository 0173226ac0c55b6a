"""Load, catch up, rebuild and persist a collection's FAISS index.

The index is derived data. Records (Parquet) are the truth: a missing, stale or foreign
index is rebuilt or caught up from them, never trusted blindly.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from blipsearch.errors import ModelMismatchError, StorageError
from search import faiss_backend as fb
from search.vector_index import VectorIndex
from storage.atomic import atomic_write_bytes, atomic_write_with
from storage.collection import Collection
from storage.lock import writer_lock
from storage.manifest import IndexInfo

log = logging.getLogger(__name__)
TRAIN_SAMPLE = 200_000


def _catch_up(coll: Collection, index: VectorIndex, covered: set[str]) -> list[str]:
    """Add the shards the index does not cover yet. Returns the covered shard list."""
    missing = [s for s in coll.manifest.shards if s.file not in covered]
    for ids, emb in coll.iter_embeddings(missing):
        index.add(ids, emb)
    return [s.file for s in coll.manifest.shards]


def build(coll: Collection, spec: str | None = None) -> tuple[VectorIndex, list[str]]:
    """A fresh index over every committed record."""
    m = coll.manifest
    index = VectorIndex.empty(spec or fb.DEFAULT_SPEC, m.dim, m.vectors_per_item)
    if not index.cpu.is_trained:
        index.train(coll.sample_vectors(TRAIN_SAMPLE))
    return index, _catch_up(coll, index, set())


def load(coll: Collection, fingerprint: str | None = None) -> tuple[VectorIndex, list[str]]:
    """The saved index if it is valid for this collection's model, caught up with new shards.

    Refuses (ModelMismatchError) a ``fingerprint`` that is not the collection's model.
    """
    m = coll.reload()
    if fingerprint is not None and fingerprint != m.model_fingerprint:
        coll.check_model(fingerprint, "the requested model")
    info = m.index
    if info is None:
        return build(coll)
    if (
        info.model_fingerprint != m.model_fingerprint
        or info.dim != m.dim
        or info.vectors_per_item != m.vectors_per_item
    ):
        raise ModelMismatchError(
            f"The saved index of {coll.name!r} was built for model {info.model_id!r}, not the collection's "
            f"model {m.model_id!r}. Rebuild it with: blipsearch reindex --collection {coll.name}"
        )
    path = coll.root / info.file
    live = {s.file for s in m.shards}
    if not path.is_file() or not set(info.covered_shards) <= live:
        log.warning("Index of %s is missing or refers to unknown shards; rebuilding from records", coll.name)
        return build(coll, info.spec)
    try:
        cpu = fb.read(path)
    except StorageError as exc:  # unreadable, or replaced by a concurrent writer meanwhile
        log.warning("%s; rebuilding the index of %s from records", exc, coll.name)
        return build(coll, info.spec)
    expected = sum(s.rows for s in m.shards if s.file in set(info.covered_shards)) * m.vectors_per_item
    if cpu.ntotal != info.ntotal or cpu.ntotal != expected or cpu.d != m.dim:
        log.warning("Index of %s has %d vectors, records say %d; rebuilding", coll.name, cpu.ntotal, expected)
        return build(coll, info.spec)
    index = VectorIndex(cpu, m.dim, m.vectors_per_item, info.spec)
    return index, _catch_up(coll, index, set(info.covered_shards))


def save(coll: Collection, index: VectorIndex, covered: list[str]) -> IndexInfo:
    """Persist ``index`` as the collection's index (caller holds the writer lock)."""
    m = coll.manifest
    seq = int(datetime.now(timezone.utc).timestamp() * 1e6)
    name = f"index-{seq}.faiss"
    atomic_write_with(coll.root / name, lambda p: fb.write(index.cpu, p))
    info = IndexInfo(
        file=name,
        spec=index.spec,
        model_id=m.model_id,
        model_fingerprint=m.model_fingerprint,
        dim=m.dim,
        vectors_per_item=m.vectors_per_item,
        ntotal=index.ntotal,
        covered_shards=covered,
        built_at=datetime.now(timezone.utc),
    )
    # A sidecar so the index file is self-describing outside the manifest too.
    atomic_write_bytes(coll.root / "index.json", info.model_dump_json(indent=2).encode())
    coll.commit_index(info, m.index.file if m.index else None)
    return info


def refresh(coll: Collection, *, rebuild: bool = False, spec: str | None = None) -> IndexInfo:
    """Bring the saved index up to date with the records (or rebuild it) and persist it."""
    with writer_lock(coll.lock_path):
        m = coll.reload()
        live = [sh.file for sh in m.shards]
        if (
            not rebuild
            and not spec
            and m.index
            and m.index.covered_shards == live
            and (coll.root / m.index.file).is_file()
        ):
            return m.index  # already up to date
        index, covered = build(coll, spec) if rebuild or spec else load(coll)
        info = save(coll, index, covered)
    log.info("index of %s: %d vectors (%s)", coll.name, info.ntotal, info.spec)
    return info
