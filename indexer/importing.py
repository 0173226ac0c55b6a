"""Import embeddings computed elsewhere: clip-retrieval's ``clip_inference`` output
(``img_emb/img_emb_0.npy`` + ``metadata/metadata_0.parquet``, row-aligned, file by file) or
plain ``.npy`` files with Parquet metadata, or Parquet files with a vector column.

A collection never mixes models, so an import is checked before anything is written:

* the model is named (the collection records it; an existing collection must have it);
* every vector has the model's dimension (and one vector per image);
* a sample of rows whose uri resolves (a local file or an object URL) is re-embedded by the
  model and compared with the imported vectors: any cosine under ``min_cosine`` refuses the
  import with the numbers. With no resolvable uri at all the check cannot run, and the import
  is refused unless ``allow_unverified``.

Records keep the metadata columns; a row's ``sha256`` is its image's content hash when the uri
resolves (so ``/file`` reads it back verified and re-indexing the images later skips them),
else ``uri:<sha256 of the uri>`` (never a content hash; such originals are not served). Vectors
are L2-normalised as the search expects. Re-running an import adds nothing new.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from blipsearch.errors import ImageDecodeError, InvalidInputError
from blipsearch.limits import DECODE_TIMEOUT_S, MAX_IMAGE_PIXELS
from indexer.decode_pool import DecodeConfig, decode_bounded
from indexer.sources.manifest import _jsonable
from media.decode import read_source
from media.objects import is_object_url
from models.base import Embedder
from storage.collection import Collection

URI_COLUMNS = ("image_path", "path", "uri", "file", "filename", "url")
VECTOR_COLUMNS = ("embedding", "emb", "vector", "img_emb", "image_embedding")


@dataclass
class ImportOptions:
    path_column: str | None = None
    vector_column: str | None = None
    sample: int = 16
    min_cosine: float = 0.95
    allow_unverified: bool = False
    shard_size: int = 4096
    max_bytes: int = 256 * 1024 * 1024
    max_pixels: int = MAX_IMAGE_PIXELS
    decode_timeout_s: float = DECODE_TIMEOUT_S
    hash_workers: int = 8


@dataclass
class ImportReport:
    collection: str
    added: int = 0
    skipped_duplicates: int = 0
    rows: int = 0
    files: int = 0
    normalized: int = 0
    check: dict[str, Any] = field(default_factory=dict)


def _number(p: Path) -> tuple[int, str]:
    m = re.search(r"(\d+)(?=\.[^.]+$)", p.name)
    return (int(m.group(1)) if m else -1, p.name)


@dataclass
class Part:
    """One file's worth of rows: vectors and the metadata table aligned with them."""

    vectors: Callable[[], np.ndarray]
    table: Callable[[], Any]
    name: str


def _load_npy(path: Path) -> np.ndarray:
    try:
        out: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)  # never unpickles
    except ValueError as exc:
        raise InvalidInputError(f"{path.name} is not a plain .npy array: {exc}") from None
    return out


def find_parts(embeddings: Path, metadata: Path | None, vector_column: str | None) -> list[Part]:
    import pyarrow.parquet as pq

    if not embeddings.exists():
        raise InvalidInputError(f"--embeddings {str(embeddings)!r} does not exist.")
    emb_dir = embeddings / "img_emb" if (embeddings / "img_emb").is_dir() else embeddings
    npys = sorted(emb_dir.glob("*.npy"), key=_number) if emb_dir.is_dir() else [emb_dir]
    npys = [p for p in npys if p.suffix == ".npy"]
    if npys:
        if metadata is None:
            sibling = embeddings / "metadata"
            metadata = sibling if sibling.is_dir() else None
        if metadata is None:
            raise InvalidInputError("--metadata is needed with .npy embeddings (the Parquet files aligned with them).")
        metas = sorted(metadata.glob("*.parquet"), key=_number) if metadata.is_dir() else [metadata]
        if len(metas) != len(npys):
            raise InvalidInputError(
                f"{len(npys)} embedding files but {len(metas)} metadata files: they must pair up one to one."
            )
        return [
            Part(partial(_load_npy, n), partial(pq.read_table, m), n.name) for n, m in zip(npys, metas, strict=True)
        ]
    parquets = sorted(emb_dir.glob("*.parquet"), key=_number) if emb_dir.is_dir() else [emb_dir]
    parquets = [p for p in parquets if p.suffix == ".parquet"]
    if not parquets:
        raise InvalidInputError(f"No .npy or .parquet embeddings under {str(embeddings)!r}.")
    if metadata is not None:
        raise InvalidInputError("--metadata applies to .npy embeddings; Parquet embeddings carry their own columns.")

    def vectors_of(path: Path) -> np.ndarray:
        table = pq.read_table(path)
        col = vector_column or next((c for c in VECTOR_COLUMNS if c in table.schema.names), None)
        if col is None or col not in table.schema.names:
            raise InvalidInputError(
                f"{path.name} has no vector column (looked for {vector_column or ', '.join(VECTOR_COLUMNS)}); "
                "name it with --vector-column."
            )
        return np.asarray(table.column(col).to_pylist(), dtype=np.float32)

    def table_of(path: Path) -> Any:
        table = pq.read_table(path)
        col = vector_column or next((c for c in VECTOR_COLUMNS if c in table.schema.names), None)
        return table.drop_columns([col]) if col else table

    return [Part(partial(vectors_of, p), partial(table_of, p), p.name) for p in parquets]


def _rows(part: Part, opts: ImportOptions, dim: int) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
    vecs = np.asarray(part.vectors(), dtype=np.float32)
    if vecs.ndim != 2 or vecs.shape[1] != dim:
        raise InvalidInputError(
            f"{part.name}: vectors of shape {tuple(vecs.shape)}, but the model's dimension is {dim}: "
            "these embeddings are not from this model."
        )
    table = part.table()
    if table.num_rows != vecs.shape[0]:
        raise InvalidInputError(f"{part.name}: {vecs.shape[0]} vectors but {table.num_rows} metadata rows.")
    names = table.schema.names
    col = opts.path_column or next((c for c in URI_COLUMNS if c in names), None)
    if col is None or col not in names:
        raise InvalidInputError(
            f"{part.name}: no uri column (looked for {opts.path_column or ', '.join(URI_COLUMNS)}); "
            "name it with --path-column."
        )
    uris = [str(u) if u is not None else "" for u in table.column(col).to_pylist()]
    others = {c: table.column(c).to_pylist() for c in names if c != col}
    metas = [{c: _jsonable(v[i]) for c, v in others.items()} for i in range(len(uris))]
    return vecs, uris, metas


def _resolves(uri: str) -> bool:
    return bool(uri) and (is_object_url(uri) or Path(uri).is_file())


def _read(uri: str, max_bytes: int) -> bytes | None:
    try:
        path = None if is_object_url(uri) else Path(uri)
        return read_source(uri, path, None, max_bytes).data
    except ImageDecodeError:
        return None


def check_sample(embedder: Embedder, parts: Sequence[Part], opts: ImportOptions) -> dict[str, Any]:
    """Re-embed up to ``opts.sample`` resolvable rows, spread over the files; the cosines."""
    cfg = DecodeConfig(embedder.preprocessor(), None, opts.max_pixels, None, timeout_s=opts.decode_timeout_s)
    picked: list[tuple[np.ndarray, bytes]] = []
    per_part = max(1, -(-opts.sample // max(1, len(parts))))
    for part in parts:
        vecs, uris, _ = _rows(part, opts, embedder.dim)
        step = max(1, len(uris) // per_part)
        for i in range(0, len(uris), step):
            if len(picked) >= opts.sample:
                break
            if _resolves(uris[i]):
                data = _read(uris[i], opts.max_bytes)
                if data is not None:
                    picked.append((np.asarray(vecs[i], np.float32), data))
    if not picked:
        return {"checked": 0}
    pixels = []
    stored = []
    for vec, data in picked:
        try:
            pixels.append(decode_bounded(cfg, data).pixels)
            stored.append(vec)
        except ImageDecodeError:
            continue
    if not pixels:
        return {"checked": 0}
    fresh = embedder.embed_pixels(np.stack(pixels))
    a = np.stack(stored)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = fresh / np.maximum(np.linalg.norm(fresh, axis=1, keepdims=True), 1e-12)
    cos = np.sum(a * b, axis=1)
    return {"checked": len(cos), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def _describe(uri: str, max_bytes: int) -> tuple[str, int, int, str | None, int]:
    """(sha256, width, height, format, bytes) of the image at ``uri``; zeros when it does not
    resolve (its sha256 is then ``uri:`` + the uri's hash, never mistaken for content)."""
    data = _read(uri, max_bytes) if _resolves(uri) else None
    if data is None:
        return "uri:" + hashlib.sha256(uri.encode("utf-8", "surrogatepass")).hexdigest(), 0, 0, None, 0
    width = height = 0
    fmt = None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:  # the header only: no decode
            (width, height), fmt = img.size, img.format
    except Exception:  # noqa: BLE001 - sizes are informative only
        pass
    return hashlib.sha256(data).hexdigest(), width, height, fmt, len(data)


def import_embeddings(
    coll: Collection,
    embedder: Embedder,
    parts: Sequence[Part],
    opts: ImportOptions,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    if embedder.vectors_per_image != 1:
        raise InvalidInputError(f"{embedder.model_id} stores several vectors per image; import one-vector models only.")
    report = ImportReport(coll.name, files=len(parts))
    report.check = check_sample(embedder, parts, opts)
    if report.check["checked"] == 0 and not opts.allow_unverified:
        raise InvalidInputError(
            "No sampled uri resolves to a readable image, so the embeddings cannot be checked against "
            f"{embedder.model_id}; pass --allow-unverified to import them anyway."
        )
    if report.check["checked"] and report.check["min_cosine"] < opts.min_cosine:
        c = report.check
        raise InvalidInputError(
            f"The embeddings do not match {embedder.model_id}: {c['checked']} sampled images re-embedded, cosine "
            f"min {c['min_cosine']:.4f}, mean {c['mean_cosine']:.4f}, under --min-cosine {opts.min_cosine}. "
            "Nothing was imported."
        )
    with ThreadPoolExecutor(opts.hash_workers, thread_name_prefix="hash") as pool:
        for part in parts:
            vecs, uris, metas = _rows(part, opts, embedder.dim)
            for start in range(0, len(uris), opts.shard_size):
                chunk = slice(start, start + opts.shard_size)
                emb = np.array(vecs[chunk], dtype=np.float32)
                norms = np.linalg.norm(emb, axis=1, keepdims=True)
                report.normalized += int(np.sum(np.abs(norms - 1) > 1e-3))
                emb = emb / np.maximum(norms, 1e-12)
                info = list(pool.map(lambda u: _describe(u, opts.max_bytes), uris[chunk]))
                n = len(info)
                cols: dict[str, list[Any]] = {
                    "uri": uris[chunk],
                    "sha256": [i[0] for i in info],
                    "width": [i[1] for i in info],
                    "height": [i[2] for i in info],
                    "format": [i[3] for i in info],
                    "bytes": [i[4] for i in info],
                    "metadata": [json.dumps(m, sort_keys=True, default=str) if m else None for m in metas[chunk]],
                    "caption": [None] * n,
                    "caption_model": [None] * n,
                }
                aligned = coll.append_aligned(cols, emb)
                added = sum(1 for i in aligned if i is not None)
                report.added += added
                report.skipped_duplicates += n - added
                report.rows += n
                if on_progress:
                    on_progress(report.rows)
    return report
