"""The Ray executor: the same stages as the local pipeline, on a Ray cluster (Ray Data).

    items (driver: sources)  →  map_batches(ReadDecode)   read, sha256, skip known, decode+preprocess
                             →  map_batches(EmbedActor)   model actors (num_gpus=1 each when GPUs exist)
                             →  driver: the collection's shard writer (the same Parquet shards,
                                the manifest stays the single commit point) → index build/extend

Order is preserved, so a Ray run assigns the same ids in the same order as the local runner
for the same input (tests/test_ray_runner.py checks the records are equal). Every node needs
blipsearch installed and the inputs readable at the same paths (a shared filesystem), or in an
object store the workers reach with their own credential chain (s3:// items are read by the workers).
Ray is an optional extra: ``pip install 'blipsearch[ray]'``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from blipsearch.errors import ImageDecodeError, MissingDependencyError
from indexer.commit import IndexReport, ShardCommitter
from indexer.decode_pool import DecodeConfig, decode_bounded
from indexer.options import IndexOptions
from indexer.runner import Executor, Progress
from indexer.sources.base import SourceItem
from indexer.stages import StageTimer
from indexer.updates import UriUpdates
from media.decode import read_source
from models.base import Embedder
from storage.collection import Collection

log = logging.getLogger(__name__)
META_COLUMNS = ("width", "height", "format", "bytes")


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingDependencyError("The Ray runner", "ray[data]", "ray") from exc
    return ray


class ReadDecode:
    """Ray Data stage: read, hash, skip known content, decode and preprocess (CPU tasks)."""

    def __init__(self, cfg: DecodeConfig, max_bytes: int, known: Any, pixel_shape: tuple[int, ...]) -> None:
        self.cfg = cfg
        self.max_bytes = max_bytes
        self.known: set[str] = _ray().get(known) if not isinstance(known, set) else known
        self.shape = pixel_shape

    def _one(self, uri: str, path: str, data: bytes | None, known_sha: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {"sha256": "", "error": "", "reason": "", "duplicate": False}
        out.update({"width": 0, "height": 0, "format": "", "bytes": 0})
        pixels = np.zeros(self.shape, np.float32)
        try:
            if known_sha and known_sha in self.known:  # committed, unchanged object: not read again
                out.update(sha256=known_sha, duplicate=True)
                out["pixels"] = pixels
                return out
            raw = read_source(uri, Path(path) if path else None, data, self.max_bytes)
            out["sha256"] = raw.sha256
            if raw.sha256 in self.known:
                out["duplicate"] = True
            else:
                dec = decode_bounded(self.cfg, raw.data)
                pixels = dec.pixels
                out.update({k: dec.meta[k] or "" for k in META_COLUMNS})
        except ImageDecodeError as exc:
            out.update(error=str(exc), reason=exc.reason)
        out["pixels"] = pixels
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [
            self._one(str(u), str(p), d if d else None, str(k))
            for u, p, d, k in zip(batch["uri"], batch["path"], batch["data"], batch["known_sha256"], strict=True)
        ]
        out = {k: np.asarray([r[k] for r in rows]) for k in rows[0] if k != "pixels"}
        out["pixels"] = np.stack([r["pixels"] for r in rows])
        out.update({k: batch[k] for k in ("uri", "meta_json", "source_error")})
        return out


class EmbedActor:
    """Ray Data stage: one model replica per actor; embeds rows that decoded."""

    def __init__(self, load_model: Callable[..., Embedder], source: str, gpu: bool) -> None:
        self.embedder = load_model(source, device="cuda" if gpu else "cpu")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = (batch["error"] == "") & ~batch["duplicate"] & (batch["source_error"] == "")
        e = self.embedder
        shape = (e.dim,) if e.vectors_per_image == 1 else (e.vectors_per_image, e.dim)
        emb = np.zeros((len(ok), *shape), np.float32)
        if ok.any():
            emb[ok] = e.embed_pixels(batch["pixels"][ok])
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out["embedding"] = emb
        return out


def _items(sources: Iterable[SourceItem]) -> list[dict[str, Any]]:
    return [
        {
            "uri": it.uri,
            "path": str(it.path) if it.path else "",
            "data": it.data or b"",
            "meta_json": json.dumps(it.meta, sort_keys=True, default=str) if it.meta else "",
            "source_error": it.error or "",
            "known_sha256": it.sha256 or "",
        }
        for it in sources
    ]


class RayExecutor(Executor):
    """Read/decode as Ray Data tasks, the model in actors built by ``load_model`` (a picklable
    callable from the composition root), the shard writer on the driver."""

    name = "ray"

    def __init__(self, options: IndexOptions, load_model: Callable[..., Embedder]) -> None:
        self.options = options
        self.load_model = load_model
        self.timer = StageTimer()

    def describe(self) -> dict[str, Any]:
        return {"runner": "ray", "address": self.options.address, "batch_size": self.options.batch_size}

    def run(
        self, coll: Collection, embedder: Embedder, items: Iterable[SourceItem], on_progress: Progress
    ) -> IndexReport:
        ray = _ray()
        o = self.options
        rows = _items(items)
        report = IndexReport(coll.name)
        if not ray.is_initialized():
            ray.init(
                address=o.address,
                num_cpus=None if o.address else (o.num_cpus or os.cpu_count()),
                include_dashboard=False,
                log_to_driver=False,
            )
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # ids follow input order, as in the local runner
        ctx.enable_progress_bars = False
        gpus = int(ray.cluster_resources().get("GPU", 0))
        side = embedder.input_size or 384
        cfg = DecodeConfig(
            embedder.preprocessor(), None, o.max_pixels, side if o.jpeg_draft else None, timeout_s=o.decode_timeout_s
        )
        bs = o.batch_size
        if not rows:
            return report
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // bs, 512)))
        ds = ds.map_batches(
            ReadDecode,
            fn_constructor_kwargs={
                "cfg": cfg,
                "max_bytes": o.max_bytes,
                "known": ray.put(coll.known_hashes()),
                "pixel_shape": (3, side, side),
            },
            batch_size=bs,
            compute=ray.data.ActorPoolStrategy(size=max(1, o.workers)),
        )
        ds = ds.map_batches(
            EmbedActor,
            fn_constructor_kwargs={"load_model": self.load_model, "source": embedder.model_id, "gpu": bool(gpus)},
            batch_size=bs,
            compute=ray.data.ActorPoolStrategy(size=max(1, gpus)),
            num_gpus=1 if gpus else 0,
        )
        writer = ShardCommitter(coll, report, UriUpdates(coll.live_uris()), self.timer)  # the local rules
        for batch in ds.iter_batches(batch_size=o.shard_size, batch_format="numpy"):
            _commit(writer, batch)
            on_progress(report, report.total)
        return report


def _commit(writer: ShardCommitter, batch: dict[str, np.ndarray]) -> None:
    """Count failures and duplicates; commit the embedded rows as one shard (indexer/commit.py)."""
    keep: list[int] = []
    replaces: list[tuple[int, str] | None] = []
    for i in range(len(batch["uri"])):
        uri, sha = str(batch["uri"][i]), str(batch["sha256"][i])
        err = str(batch["source_error"][i]) or str(batch["error"][i])
        if err:
            reason = "source_error" if str(batch["source_error"][i]) else str(batch["reason"][i]) or "error"
            writer.failed(uri, err, reason)
        elif bool(batch["duplicate"][i]):
            writer.duplicate(uri, sha)
        else:
            keep.append(i)
            replaces.append(writer.new(uri, sha))
    cols: dict[str, list[Any]] = {
        "uri": [str(batch["uri"][i]) for i in keep],
        "sha256": [str(batch["sha256"][i]) for i in keep],
        "metadata": [str(batch["meta_json"][i]) or None for i in keep],
        "width": [int(batch["width"][i]) for i in keep],
        "height": [int(batch["height"][i]) for i in keep],
        "format": [str(batch["format"][i]) or None for i in keep],
        "bytes": [int(batch["bytes"][i]) for i in keep],
    }
    embeddings = batch["embedding"][keep] if keep else np.zeros((0, 1), np.float32)
    writer.commit(cols, embeddings, replaces=replaces)
