"""``reembed``: a new version of a collection under another model, then an atomic swap.

1. The live version is left serving. A new version folder (storage/versions.py) is built
   next to it: every live record is read back from its ``uri`` (image collections; text
   collections re-embed their stored text), checked against its sha256, embedded with the
   new model, and written with the same id, uri, metadata and caption
   (storage/copying.py). Each source shard is one commit, so a killed re-embed resumes.
2. Catch-up: shards and tombstones the live version gained meanwhile are applied; the last
   round runs under the live version's writer lock, so nothing written before the swap is lost
   and nothing written after it lands in the old version (writers to a superseded version fail).
3. The new version's index is built (the collection's explicit spec, else chosen by size).
4. Swap: the collection's symlink is replaced atomically; the old version is marked
   superseded and kept until ``--drop-old``.

An image whose file is gone or whose content changed cannot be re-embedded: the job stops
before committing that shard (fix the files and re-run), or with ``skip_missing`` drops
those records from the new version and lists them.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from blipsearch.config import Settings
from blipsearch.errors import ConflictError, InvalidInputError, SourceChangedError, StorageError
from indexer.decode_pool import DecodeConfig, DecodeStage, resolve_mode
from indexer.stages import StageTimer
from media.stored import READ_ERRORS, ImageLimits, StoredImages
from models.base import Embedder
from search import index_store
from storage import sync_state, versions
from storage.atomic import atomic_write_bytes
from storage.catalog import open_catalog
from storage.collection import Collection
from storage.copying import commit_copied_shard
from storage.job_run import JobRun
from storage.lock import exclusive_or_refuse, reembed_lock_path, writer_lock
from storage.manifest import MANIFEST_NAME, Manifest, ShardInfo
from storage.reading import live_mask, shard_meta
from storage.stacks import STACKS_LOCK, STACKS_NAME

log = logging.getLogger(__name__)


class Reembedder:
    def __init__(
        self, settings: Settings, live: Collection, target: Collection, embedder: Embedder, skip_missing: bool
    ):
        self.settings = settings
        self.live = live
        self.target = target
        self.embedder = embedder
        self.skip_missing = skip_missing
        limits = ImageLimits.from_settings(settings)
        self.reader = StoredImages(live.uri_aliases(), limits)
        self.timer = StageTimer()
        self.dropped: list[dict[str, Any]] = []
        self.copied = 0
        self.decoder = DecodeStage(
            DecodeConfig(
                embedder.preprocessor(), None, limits.max_pixels, limits.draft, timeout_s=settings.decode_timeout_s
            ),
            mode=resolve_mode(settings.decode_mode, live.manifest.count),
            processes=settings.decode_workers,
        )

    def _pixels(self, row: dict[str, Any]) -> np.ndarray | str:
        """The record's preprocessed pixels, or why it cannot be re-embedded."""
        try:
            with self.timer.time("read"):
                data = self.reader.read(row["uri"], row["sha256"])
            with self.timer.time("decode"):
                return self.decoder(data).pixels
        except SourceChangedError:
            return "changed: the file at this uri no longer has the indexed content"
        except READ_ERRORS as exc:
            return f"{getattr(exc, 'reason', exc.code)}: {exc}"

    def _embed_images(self, table: pa.Table) -> tuple[pa.Table, np.ndarray, np.ndarray | None]:
        """Re-read, check, decode and embed a shard's rows, a few batches at a time (pixels of
        a whole shard would not fit in memory)."""
        rows = table.select(["id", "uri", "sha256"]).to_pylist()
        cache = self.target.manifest.itm_features is not None
        bs = self.settings.batch_size
        keep = np.ones(len(rows), dtype=bool)
        embs, feats = [], []
        with ThreadPoolExecutor(2 * self.settings.decode_workers + 1, thread_name_prefix="reembed") as pool:
            for start in range(0, len(rows), 4 * bs):
                chunk = rows[start : start + 4 * bs]
                results = list(pool.map(self._pixels, chunk))
                bad = [(r, why) for r, why in zip(chunk, results, strict=True) if isinstance(why, str)]
                if bad and not self.skip_missing:
                    listed = "; ".join(f"id {r['id']} ({r['uri']}): {why}" for r, why in bad[:5])
                    raise StorageError(
                        f"{len(bad)} record(s) of {self.live.name!r} cannot be re-embedded: {listed}. Restore the "
                        "files and re-run (committed shards are kept), or pass --skip-missing to leave those "
                        "records out."
                    )
                self.dropped += [{"id": r["id"], "uri": r["uri"], "error": why} for r, why in bad]
                keep[start : start + len(chunk)] = [not isinstance(res, str) for res in results]
                pixels = [res for res in results if not isinstance(res, str)]
                for i in range(0, len(pixels), bs):
                    batch = np.stack(pixels[i : i + bs])
                    with self.timer.time("model", len(batch)):
                        emb, tokens = self.embedder.embed_batch(batch, with_tokens=cache)
                    embs.append(emb)
                    if tokens is not None:
                        feats.append(tokens)
        emb = np.concatenate(embs) if embs else self.embedder.empty_embeddings()
        return table.filter(pa.array(keep)), emb, (np.concatenate(feats) if feats else None)

    def copy_shard(self, shard: ShardInfo) -> None:
        try:
            table = pq.read_table(self.live.shard_path(shard))
        except FileNotFoundError:
            raise ConflictError(
                f"{self.live.name!r} was compacted while it was being re-embedded; re-run reembed "
                "(committed shards are kept)."
            ) from None
        if shard.deleted:
            table = table.filter(pa.array(live_mask(shard, table.column("id").to_numpy())))
        if self.live.manifest.kind == "texts":
            with self.timer.time("model", table.num_rows):
                emb = self.embedder.embed_texts(table.column("text").to_pylist())
            feats = None
        else:
            table, emb, feats = self._embed_images(table)
        with self.timer.time("write", table.num_rows):
            commit_copied_shard(self.target, shard, table, emb, feats)
        self.copied += table.num_rows

    def pending(self) -> list[ShardInfo]:
        m = self.live.reload()
        done = set((self.target.reload().reembed or {}).get("done", []))
        todo = [s for s in m.shards if s.file not in done]
        copied = [(s.min_id, s.max_id) for s in self.target.manifest.shards]
        for s in todo:
            if any(lo <= s.max_id and s.min_id <= hi for lo, hi in copied):
                raise ConflictError(
                    f"{self.live.name!r} was compacted while it was being re-embedded; re-run reembed "
                    "(it starts the new version again)."
                )
        return todo

    def sync_tombstones(self) -> None:
        """Tombstone in the new version every record deleted in the live one since it was copied
        (a copied shard keeps its source's file name)."""
        source = {s.file: s for s in self.live.reload().shards}
        gone: list[np.ndarray] = []
        for shard in self.target.reload().shards:
            src = source.get(shard.file)
            if src is not None and src.deleted:
                ids = shard_meta(self.target, shard).column("id").to_numpy()
                gone.append(ids[np.isin(ids, src.deleted) & live_mask(shard, ids)])
        if gone:
            self.target.delete(np.concatenate(gone).tolist())

    def close(self) -> None:
        self.decoder.close()


def _link_uploads(live: Collection, target: Collection) -> None:
    """Give the new version the same uploaded originals (hard links; copies across devices)."""
    src = live.root / "uploads"
    if not src.is_dir():
        return
    dst = target.root / "uploads"
    dst.mkdir(exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not (dst / f.name).exists():
            try:
                os.link(f, dst / f.name)
            except OSError:
                shutil.copy2(f, dst / f.name)


CARRIED_FILES = (STACKS_NAME, sync_state.STATE_NAME)  # per-collection files keyed by record id or path


def _carry_files(live: Collection, target: Collection) -> None:
    """Copy the collection's own files that are not records (stacks.json: ids, which a re-embed
    keeps; sync-state.json: what ``sync`` saw in its folders) into the new version. Run under the
    writer lock just before the swap, holding the stacks lock so no stack made meanwhile is lost;
    a sync running meanwhile cannot commit to the old version after the swap, and its state is a
    cache (a lost one costs a re-hash)."""
    with writer_lock(live.root / STACKS_LOCK):
        for name in CARRIED_FILES:
            try:
                body = (live.root / name).read_bytes()
            except FileNotFoundError:
                continue
            atomic_write_bytes(target.root / name, body)


def _find_or_start(settings: Settings, live: Collection, live_version: str, embedder: Embedder) -> Collection:
    name = live.name
    for version in versions.list_versions(settings.data_dir, name):
        path = versions.versions_dir(settings.data_dir, name) / version / MANIFEST_NAME
        try:
            m = Manifest.load(path)
        except (FileNotFoundError, StorageError):
            continue
        if m.reembed and m.reembed.get("source") == live_version and m.model_fingerprint == embedder.fingerprint:
            log.info("resuming the re-embed of %s into version %s", name, version)
            return Collection.new_version(settings.data_dir, name, m, version)
    src = live.manifest
    manifest = Manifest.for_model(
        name,
        embedder.describe(),
        src.kind,
        next_id=src.next_id,
        next_shard=src.next_shard,
        itm_features=src.itm_features if embedder.has_itm else None,  # CLIP & co. have no ITM tokens
        index_spec=src.index_spec,
        index_on_disk=src.index_on_disk,
        ocr=src.ocr,
        reembed={"source": live_version, "done": []},
    )
    return Collection.new_version(settings.data_dir, name, manifest, versions.new_version_id(embedder.fingerprint))


def drop_old_versions(settings: Settings, name: str) -> list[str]:
    live = versions.current(settings.data_dir, name)
    dropped = []
    for version in versions.list_versions(settings.data_dir, name):
        if version != live:
            versions.drop(settings.data_dir, name, version)
            dropped.append(version)
    return dropped


def reembed(
    settings: Settings,
    name: str,
    model: str,
    *,
    embedder: Embedder,
    drop_old: bool = False,
    skip_missing: bool = False,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Re-embed collection ``name`` with ``model`` into a new version and swap it in. One re-embed
    per collection at a time: a second one is refused (ConflictError) while the first runs."""
    data_dir = settings.data_dir
    Collection.open(data_dir, name)  # a clear error for a missing collection before any lock file
    lock = reembed_lock_path(versions.versions_dir(data_dir, name) / "x")  # merging of uploads waits for it
    with exclusive_or_refuse(lock, f"A re-embed of collection {name!r}"):
        return _reembed(settings, name, model, embedder, drop_old, skip_missing, progress, on_shard)


def _finish_swapped(settings: Settings, name: str, live: Collection, embedder: Embedder) -> dict[str, Any]:
    """``name`` is already embedded with ``embedder``: a re-embed to it that was killed after its
    swap left bookkeeping undone (the old version's ``superseded_by``, the catalog row, the job);
    finish it. With no such unfinished job there is nothing to do: InvalidInputError."""
    catalog = open_catalog(settings.catalog_url())
    unfinished = [
        j
        for j in catalog.list_jobs(name, limit=200)
        if j.kind == "reembed" and j.state in ("pending", "running", "interrupted") and j.model_id == embedder.model_id
    ]
    if not unfinished:
        raise InvalidInputError(f"Collection {name!r} is already embedded with {embedder.model_id!r}.")
    data_dir, current = settings.data_dir, versions.current(settings.data_dir, name)
    with writer_lock(live.lock_path):
        for version in versions.list_versions(data_dir, name):
            path = versions.versions_dir(data_dir, name) / version / MANIFEST_NAME
            if version == current or not path.is_file():
                continue
            old = Manifest.load(path)
            if old.superseded_by is None and old.reembed is None:  # a replaced version, not one being built
                old.superseded_by = current
                old.save(path)
    catalog.upsert_collection(name, live.manifest.kind, embedder.describe())
    count = live.manifest.count
    for job in unfinished:
        JobRun(catalog, job.id, count).succeed({"copied": count, "dropped": 0}, done=count)
    return {
        "collection": name,
        "model_id": embedder.model_id,
        "new_version": current,
        "records": count,
        "reembedded": 0,
        "finished_after_swap": True,
        "job_id": unfinished[0].id,
    }


def _reembed(
    settings: Settings,
    name: str,
    model: str,
    embedder: Embedder,
    drop_old: bool,
    skip_missing: bool,
    progress: bool,
    on_shard: Callable[[int], None] | None,
) -> dict[str, Any]:
    data_dir = settings.data_dir
    live = Collection.open(data_dir, name)
    policy = index_store.IndexPolicy.from_settings(settings)
    if embedder.fingerprint == live.manifest.model_fingerprint:
        return _finish_swapped(settings, name, live, embedder)
    with writer_lock(live.lock_path):
        live_version = versions.adopt_legacy(data_dir, name)
    live = Collection.open(data_dir, name)
    target = _find_or_start(settings, live, live_version, embedder)
    catalog = open_catalog(settings.catalog_url())
    total = live.manifest.count
    job_settings = {"model": model, "skip_missing": skip_missing}
    job = JobRun.start(catalog, "reembed", name, embedder.model_id, job_settings, total=total)
    work = Reembedder(settings, live, target, embedder, skip_missing)
    bar = tqdm(total=total, unit="rec", desc=f"reembed {name}", disable=not progress or None, dynamic_ncols=True)
    try:
        with bar, job.recorded(lambda: {"timings": work.timer.report()}):
            for _ in range(3):  # catch up without blocking writers while they keep adding
                todo = work.pending()
                if not todo:
                    break
                for shard in todo:
                    work.copy_shard(shard)
                    bar.update(shard.live_rows)
                    counts = {"copied": work.copied, "dropped": len(work.dropped)}
                    job.progress(counts, work.copied, timings=work.timer.report)
                    if on_shard:
                        on_shard(work.copied)
            with work.timer.time("index"):  # the bulk of the index, before writers are held off
                index_store.refresh(target, policy=policy)
            with writer_lock(live.lock_path):  # the final round: nothing can be written meanwhile
                for shard in work.pending():
                    work.copy_shard(shard)
                work.sync_tombstones()
                _link_uploads(live, target)
                _carry_files(live, target)
                with work.timer.time("index"):
                    info = index_store.refresh(target, policy=policy)  # adds only what the final round brought
                m = target.reload()
                src = live.reload()  # ids and shard names the live version used meanwhile are taken
                m.next_id, m.next_shard = max(m.next_id, src.next_id), max(m.next_shard, src.next_shard)
                m.reembed = None
                m.save(target.root / MANIFEST_NAME)
                versions.link(data_dir, name, target.root.name)  # the swap
                old = live.reload()
                old.superseded_by = target.root.name
                old.save(live.root / MANIFEST_NAME)
            catalog.upsert_collection(name, m.kind, embedder.describe())
    finally:
        work.close()
    dropped_versions = drop_old_versions(settings, name) if drop_old else []
    payload: dict[str, Any] = {
        "collection": name,
        "model_id": embedder.model_id,
        "old_version": live_version,
        "new_version": target.root.name,
        "records": m.count,
        "reembedded": work.copied,
        "dropped_records": work.dropped,
        "dropped_versions": dropped_versions,
        "index": {"spec": info.spec, "ntotal": info.ntotal, "search_defaults": info.search_defaults},
        "timings": work.timer.report(),
        "job_id": job.job_id,
    }
    counts = {"copied": work.copied, "dropped": len(work.dropped)}
    job.succeed(counts, done=total, failures=work.dropped, timings=payload["timings"])
    return payload
