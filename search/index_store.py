"""Load, sync, rebuild and persist a collection's FAISS index.

The index is derived data. Records (Parquet + the manifest's tombstones) are the truth: a
missing, stale or foreign index is rebuilt or caught up from them, never trusted blindly.

``sync`` brings an index in memory up to date with the manifest: shards it does not hold are
added, tombstones it has not applied are removed. It is what keeps a live server's index
current after uploads and deletes without reloading the index from disk.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from blipsearch.config import Settings
from blipsearch.errors import InvalidInputError, ModelMismatchError, StorageError
from blipsearch.limits import FLAT_MAX_VECTORS, TARGET_RECALL
from search import faiss_backend as fb
from search import ondisk
from search.faiss_index import FaissIndex
from search.index_choice import choose_placement, family, is_ivf, memory_bytes, needs_rebuild, train_size
from search.limits import DEFAULT_REFINE_K
from search.recall import tune
from search.specs import faiss_ids, with_id_map
from search.vector_index import VectorIndex
from storage.atomic import atomic_write_bytes
from storage.collection import Collection
from storage.lock import writer_lock
from storage.manifest import MANIFEST_NAME, IndexInfo, ShardInfo
from storage.reading import on_newer_manifest

log = logging.getLogger(__name__)


class StaleIndexError(StorageError):
    """The index holds shards the manifest no longer names (compacted): reload it."""


def sync(coll: Collection, index: FaissIndex) -> bool:
    """Apply the manifest's new shards and tombstones to ``index``. Returns True if it changed.

    Raises StaleIndexError when the index holds shards that are gone (compaction renamed
    them), and StorageError when the index type cannot remove vectors (HNSW). A shard a merge
    removed after the manifest was loaded means a newer one exists: the sync goes on from that
    (storage/reading.py; what was applied stays applied, merged parents are adopted).
    """
    return on_newer_manifest(coll, lambda: _sync(coll, index))


def _sync(coll: Collection, index: FaissIndex) -> bool:
    m = coll.manifest
    live = {s.file for s in m.shards}
    for s in m.shards:  # merged shards (storage/merging.py): the parents' rows and ids, a new name
        if s.file not in index.synced and any(p.file in index.synced for p in s.merged_from):
            _adopt_merged(coll, index, s)
    if set(index.synced) - live:
        raise StaleIndexError(f"The index of {coll.name!r} refers to shards that were compacted away.")
    removals = [s for s in m.shards if s.file in index.synced and index.synced[s.file] < len(s.deleted)]
    if removals:
        index.remove(np.concatenate([np.asarray(s.deleted, np.int64) for s in removals]))
        for s in removals:
            index.synced[s.file] = len(s.deleted)
    missing = [s for s in m.shards if s.file not in index.synced]
    for shard, (ids, emb) in zip(missing, coll.iter_embeddings(missing), strict=True):
        index.add(ids, emb)
        index.synced[shard.file] = len(shard.deleted)
    index.after_sync(m.shards)
    return bool(removals or missing)


def _adopt_merged(coll: Collection, index: FaissIndex, shard: ShardInfo) -> None:
    """Hold merged ``shard`` under its new name: the parents the index holds are renamed, the
    rows of parents it never saw are added. Tombstones applied to the parents count toward the
    merged shard's (their union); if any were not, ``sync`` re-applies them all (idempotent)."""
    held = [p for p in shard.merged_from if p.file in index.synced]
    unseen = [p for p in shard.merged_from if p.file not in index.synced]
    if unseen:
        ids, emb = next(iter(coll.iter_embeddings([shard.model_copy(update={"deleted": []})])))
        want = np.zeros(len(ids), dtype=bool)
        for p in unseen:
            want |= (ids >= p.min_id) & (ids <= p.max_id)
        index.add(ids[want], emb[want])
    applied = sum(index.synced.pop(p.file) for p in held)
    index.synced[shard.file] = -1 if unseen else applied


@dataclass
class IndexPolicy:
    """How specs are chosen automatically (``from_settings``: BLIPSEARCH_INDEX_MEMORY_GB, ...; the
    defaults equal the settings' defaults)."""

    memory_bytes: int = 16 * 2**30
    flat_max: int = FLAT_MAX_VECTORS
    target_recall: float = TARGET_RECALL
    refine_k: int = DEFAULT_REFINE_K  # exact re-rank depth of compressed indexes, tuned with nprobe

    @classmethod
    def from_settings(cls, s: Settings) -> IndexPolicy:
        return cls(int(s.index_memory_gb * 2**30), s.flat_max_vectors, s.target_recall, s.refine_k)


def normalise(spec: str) -> str:
    return with_id_map(spec)


def wanted_spec(coll: Collection, policy: IndexPolicy) -> tuple[str, bool]:
    """(spec, auto): the manifest's explicit spec, else the automatic choice for its size."""
    spec, auto, _ = wanted(coll, policy)
    return spec, auto


def wanted(coll: Collection, policy: IndexPolicy) -> tuple[str, bool, bool]:
    """(spec, auto, on_disk): the explicit spec / placement (--index-spec, --on-disk) where given,
    else chosen by size and the memory budget (an explicit IVF spec over budget goes on disk)."""
    m = coll.manifest
    n = m.count * m.vectors_per_item
    if m.index_spec:
        spec = normalise(m.index_spec)
        disk = m.index_on_disk
        if disk is None:
            disk = is_ivf(spec) and memory_bytes(spec, n, m.dim) > policy.memory_bytes
        return spec, False, bool(disk)
    spec, disk = choose_placement(n, m.dim, policy.memory_bytes, policy.flat_max, m.index_on_disk)
    return spec, True, disk


def build(
    coll: Collection, spec: str | None = None, policy: IndexPolicy | None = None, on_disk: bool | None = None
) -> FaissIndex:
    """A fresh index over every live record: ``spec``, else the collection's (explicit or
    automatic) spec. Quantizers train on a sample; nprobe/efSearch defaults are tuned to the
    policy's target recall@10 on held-out records. ``on_disk`` (default: the collection's
    placement when no spec is given, else in memory) builds an on-disk IVF index."""
    policy = policy or IndexPolicy()
    m = coll.manifest
    if spec:
        chosen, disk = normalise(spec), bool(on_disk)
    else:
        chosen, _, disk = wanted(coll, policy)
        disk = disk if on_disk is None else on_disk
    if disk:
        index: FaissIndex = build_on_disk(coll, chosen, policy)
    else:
        index = VectorIndex.empty(chosen, m.dim, m.vectors_per_item)
        index.lookup = coll.embeddings_of
        if not index.cpu.is_trained:
            index.train(coll.sample_vectors(train_size(chosen, m.dim, policy.memory_bytes)))
        sync(coll, index)
    if index.kind != "flat":
        # nprobe is tuned with the exact re-rank in place: the pair reaches the target together
        index.defaults = {"refine_k": policy.refine_k} if index.compressed and policy.refine_k > 1 else {}
        index.defaults.update(tune(coll, index, policy.target_recall))
    return index


def build_on_disk(coll: Collection, spec: str, policy: IndexPolicy) -> ondisk.OnDiskIndex:
    """Train on a sample, add the shards block by block (each block within the memory budget),
    merge the blocks' lists into a new ``index-<seq>.ivfdata`` file and map it read-only."""
    m = coll.manifest
    if not is_ivf(spec):
        raise InvalidInputError(f"An on-disk index needs an IVF spec (e.g. IVF4096,PQ64), not {spec!r}.")
    trained = fb.new_index(family(spec), m.dim, id_map=False)
    sample = coll.sample_vectors(train_size(spec, m.dim, policy.memory_bytes))
    if len(sample) == 0:
        raise InvalidInputError(f"Index spec {spec!r} needs training data; the collection is empty.")
    trained.train(np.ascontiguousarray(sample, dtype=np.float32))
    del sample
    shards = list(m.shards)
    seq = _seq()
    data = coll.root / f"index-{seq}.ivfdata"
    header = coll.root / f"index-{seq}.faiss.build.tmp"
    v = m.vectors_per_item
    block = ondisk.block_vectors(policy.memory_bytes, m.dim, v)
    fids = functools.partial(faiss_ids, vectors_per_item=v)
    merged = ondisk.build_files(trained, coll.iter_embeddings(shards), fids, m.dim, block, data)
    try:
        fb.write(merged, header)
        del merged
        index = ondisk.OnDiskIndex.open(
            header, m.dim, v, spec, data_file=data.name, base_shards=[s.file for s in shards], lookup=coll.embeddings_of
        )
    finally:
        header.unlink(missing_ok=True)
    index.synced = {s.file: len(s.deleted) for s in shards}
    sync(coll, index)  # shards committed meanwhile go to the delta
    return index


def _seq() -> int:
    return int(datetime.now(timezone.utc).timestamp() * 1e6)


def covered(index: FaissIndex, coll: Collection) -> list[str]:
    """The shards ``index`` holds, in manifest order."""
    return [s.file for s in coll.manifest.shards if s.file in index.synced]


def load(coll: Collection, fingerprint: str | None = None) -> tuple[FaissIndex, list[str]]:
    """The saved index if it is valid for this collection's model, synced with the manifest.

    Refuses (ModelMismatchError) a ``fingerprint`` that is not the collection's model.
    """
    m = coll.reload()
    if fingerprint is not None and fingerprint != m.model_fingerprint:
        coll.check_model(fingerprint, "the requested model")
    info = m.index
    if info is None:
        index = build(coll)
        return index, covered(index, coll)
    if (
        info.model_fingerprint != m.model_fingerprint
        or info.dim != m.dim
        or info.vectors_per_item != m.vectors_per_item
    ):
        raise ModelMismatchError(
            f"The saved index of {coll.name!r} was built for model {info.model_id!r}, not the collection's "
            f"model {m.model_id!r}. Rebuild it with: blipsearch reindex --collection {coll.name}"
        )
    index = _read_saved(coll, info) or build(coll, info.spec, on_disk=info.on_disk)
    return index, covered(index, coll)


def _read_saved(coll: Collection, info: IndexInfo) -> FaissIndex | None:
    """The saved index synced with the manifest, or None when it must be rebuilt."""
    m = coll.manifest
    path = coll.root / info.file
    live = {s.file: s for s in m.shards}
    if not path.is_file() or not set(info.covered_shards) <= set(live):
        log.warning("Index of %s is missing or refers to unknown shards; rebuilding from records", coll.name)
        return None
    index: FaissIndex
    try:
        if info.data_file is not None:
            if not (coll.root / info.data_file).is_file():
                raise StorageError(f"the on-disk lists {info.data_file} are missing")
            index = ondisk.OnDiskIndex.open(
                path,
                m.dim,
                m.vectors_per_item,
                info.spec,
                data_file=info.data_file,
                base_shards=info.base_shards,
                lookup=coll.embeddings_of,
            )
        else:
            index = VectorIndex(fb.read(path), m.dim, m.vectors_per_item, info.spec)
            index.lookup = coll.embeddings_of
    except StorageError as exc:  # unreadable, or replaced by a concurrent writer meanwhile
        log.warning("%s; rebuilding the index of %s from records", exc, coll.name)
        return None
    cpu = index.cpu
    if (info.data_file is None and cpu.ntotal != info.ntotal) or cpu.d != m.dim:
        log.warning("Index of %s has %d vectors, its header says %d; rebuilding", coll.name, cpu.ntotal, info.ntotal)
        return None
    index.defaults = dict(info.search_defaults)
    index.synced = {f: -1 for f in info.covered_shards}  # tombstones: re-applied (idempotent)
    try:
        sync(coll, index)
    except StorageError as exc:
        log.warning("%s; rebuilding the index of %s", exc, coll.name)
        return None
    expected = sum(live[f].live_rows for f in index.synced) * m.vectors_per_item
    if index.ntotal != expected:
        log.warning("Index of %s has %d vectors, records say %d; rebuilding", coll.name, index.ntotal, expected)
        return None
    return index


def save(coll: Collection, index: FaissIndex, auto: bool = True) -> IndexInfo:
    """Persist ``index`` as the collection's index (caller holds the writer lock)."""
    m = coll.manifest
    seq = _seq()
    name = f"index-{seq}.faiss"
    data_file, base_shards = index.save(coll.root, name, seq, covered(index, coll))
    info = IndexInfo(
        file=name,
        spec=index.spec,
        model_id=m.model_id,
        model_fingerprint=m.model_fingerprint,
        dim=m.dim,
        vectors_per_item=m.vectors_per_item,
        ntotal=index.ntotal,
        covered_shards=covered(index, coll),
        built_at=datetime.now(timezone.utc),
        auto=auto,
        search_defaults=index.defaults,
        data_file=data_file,
        base_shards=base_shards,
    )
    # A sidecar so the index file is self-describing outside the manifest too.
    atomic_write_bytes(coll.root / "index.json", info.model_dump_json(indent=2).encode())
    coll.commit_index(info, m.index.file if m.index else None)
    return info


def refresh(
    coll: Collection,
    *,
    rebuild: bool = False,
    spec: str | None = None,
    policy: IndexPolicy | None = None,
    on_disk: bool | None = None,
) -> IndexInfo:
    """Bring the saved index up to date with the records (or rebuild it) and persist it.

    ``spec``: an explicit index spec, remembered by the collection (``"auto"`` forgets it).
    ``on_disk``: an explicit placement (True: on-disk IVF lists, False: in memory), remembered too.
    An automatically chosen index is rebuilt when the collection's size calls for another
    type (search/index_choice.py), e.g. Flat → IVF past ``flat_max`` vectors.
    """
    policy = policy or IndexPolicy()
    with writer_lock(coll.lock_path):
        m = coll.reload_for_write()
        changed = False
        if spec is not None:
            explicit = None if spec.strip().lower() == "auto" else normalise(spec.strip())
            if explicit:
                fb.new_index(explicit, m.dim)  # a bad spec fails here, before anything is stored
            if m.index_spec != explicit:
                m.index_spec = explicit
                changed = True
            rebuild = True
        if on_disk is not None and m.index_on_disk != on_disk:
            m.index_on_disk = on_disk
            changed = rebuild = True
        wanted_now, auto, disk = wanted(coll, policy)
        if disk and not is_ivf(wanted_now):
            raise InvalidInputError(
                f"--on-disk needs an IVF index spec (e.g. IVF1024,Flat or IVF4096,PQ64), not {wanted_now!r}."
            )
        if changed:  # validated: remember the explicit choices
            m.save(coll.root / MANIFEST_NAME)
        live = [sh.file for sh in m.shards]
        stale_type = m.index is not None and (
            (auto and m.index.auto and needs_rebuild(m.index.spec, wanted_now))
            or (not auto and m.index.spec != wanted_now)
            or m.index.on_disk != disk
        )
        if (
            not rebuild
            and not stale_type
            and m.index
            and m.index.covered_shards == live
            and m.index.ntotal == m.count * m.vectors_per_item
            and (coll.root / m.index.file).is_file()
        ):
            return m.index  # already up to date
        if rebuild or stale_type or m.index is None:
            index = build(coll, wanted_now, policy, on_disk=disk)
        else:
            index = load(coll)[0]
        info = save(coll, index, auto=auto)
    log.info("index of %s: %d vectors (%s%s)", coll.name, info.ntotal, info.spec, ", on disk" if info.on_disk else "")
    return info
