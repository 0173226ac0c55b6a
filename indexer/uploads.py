"""Index uploaded image bytes: store each original under
``DATA_DIR/collections/<name>/uploads/<sha256>.<ext>``
(content-addressed, written atomically, never overwritten), then run the same pipeline as
bulk jobs on those files, so uploads and jobs produce identical records."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from blipsearch.config import Settings
from blipsearch.errors import CollectionNotFoundError
from indexer.ocr import OcrOptions, OcrStage
from indexer.options import IndexOptions
from indexer.pipeline import IndexPipeline
from models.base import Embedder
from storage.atomic import atomic_write_bytes
from storage.collection import Collection

log = logging.getLogger(__name__)
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff", "HEIF": "heic"}


@dataclass
class Blob:
    filename: str | None
    data: bytes
    format: str


@dataclass
class UploadOutcome:
    added: list[tuple[str | None, int]] = field(default_factory=list)
    duplicates: list[tuple[str | None, str]] = field(default_factory=list)  # (filename, sha256)
    failures: list[tuple[str | None, str]] = field(default_factory=list)  # (filename, reason)


def index_blobs(settings: Settings, coll: Collection, embedder: Embedder, blobs: list[Blob]) -> UploadOutcome:
    # Through DATA_DIR/collections/<name>, not the version folder: record uris stay valid across
    # re-embeds (each version holds the same uploads; storage/versions.py). Readers map this
    # server-owned link to the version folder before their no-symlink walk (media/safe_read.py).
    folder = Collection.path_for(Path(settings.data_dir).resolve(), coll.name) / "uploads"
    paths: list[Path] = []
    for blob in blobs:
        sha = hashlib.sha256(blob.data).hexdigest()
        path = folder / f"{sha}.{EXTENSIONS.get(blob.format, 'img')}"
        if not path.exists():
            try:
                atomic_write_bytes(path, blob.data)
            except FileNotFoundError:  # the collection was deleted while this upload arrived
                if Collection.exists(settings.data_dir, coll.name):
                    raise
                raise CollectionNotFoundError(f"Collection {coll.name!r} does not exist.") from None
        paths.append(path)
    options = IndexOptions.from_settings(
        settings,
        shard_size=max(len(paths), 1),  # one upload request = one committed shard
        workers=min(settings.decode_workers, max(len(paths), 1)),
        max_bytes=settings.max_upload_bytes,
        decode_mode="thread",  # a few files: no worker processes to start
    )
    # A collection with OCR on reads the text of each upload (its engine loads once per process).
    ocr = OcrStage(OcrOptions.for_collection(settings, coll.manifest.ocr)) if coll.manifest.ocr else None
    pipeline = IndexPipeline(
        coll,
        embedder,
        options,
        track_paths=True,
        update_changed=False,  # content-addressed paths: a uri never holds new content
        ocr=ocr,
    )
    try:
        report = pipeline.run(paths)
    finally:
        if ocr is not None:
            ocr.close()
    if settings.merge_small_shards:  # one request = one small shard: keep their number low
        from storage.merging import merge_tail

        try:
            merge_tail(coll, small_rows=settings.small_shard_rows, fanin=settings.merge_fanin)
        except Exception:  # the upload is committed; a merge is only an optimisation
            log.exception("merging the small shards of %s failed; the next upload retries", coll.name)
    failed = {f["path"]: f["error"] for f in report.failures}
    out = UploadOutcome()
    reported: set[Path] = set()
    for blob, path in zip(blobs, paths, strict=True):
        first = path not in reported
        reported.add(path)
        if first and str(path) in report.ids_by_path:
            out.added.append((blob.filename, report.ids_by_path[str(path)]))
        elif first and str(path) in failed:
            out.failures.append((blob.filename, failed[str(path)]))
        else:
            out.duplicates.append((blob.filename, path.stem))
    return out
