"""How an indexing run runs: ``IndexOptions``, built once at the edge (CLI flags and settings,
or the API's settings) and passed down to the runner, the executors and the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from blipsearch.errors import InvalidInputError
from blipsearch.limits import (
    BATCH_SIZE,
    DECODE_TIMEOUT_S,
    DECODE_WORKERS,
    MAX_FILE_BYTES,
    MAX_IMAGE_PIXELS,
    SHARD_SIZE,
)

if TYPE_CHECKING:
    from blipsearch.config import Settings

RUNNERS = ("local", "ray")
LOCAL_ONLY = "--captions and --cache-itm-features run with --runner local only."


@dataclass(frozen=True)
class IndexOptions:
    """``batch_size`` images per forward pass, ``shard_size`` records per committed shard,
    ``workers`` decode processes (or threads, ``decode_mode``), the per-file limits, JPEG draft
    decoding, PDQ hashing, and where it runs: ``runner`` local or ray (``address``: a Ray cluster)."""

    batch_size: int = BATCH_SIZE
    shard_size: int = SHARD_SIZE
    workers: int = DECODE_WORKERS
    max_pixels: int = MAX_IMAGE_PIXELS
    max_bytes: int = MAX_FILE_BYTES
    decode_timeout_s: float = DECODE_TIMEOUT_S
    jpeg_draft: bool = True
    pdq: bool = True  # PDQ-hash the decoded images (when pdqhash is installed; needs the full decode)
    decode_mode: str = "auto"  # auto, process or thread (indexer/decode_pool.py:resolve_mode)
    runner: str = "local"
    address: str | None = None
    num_cpus: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> IndexOptions:
        """The ``BLIPSEARCH_*`` settings (CLI flags already folded in), with ``overrides``."""
        fields: dict[str, Any] = {
            "batch_size": settings.batch_size,
            "shard_size": settings.shard_size,
            "workers": settings.decode_workers,
            "max_pixels": settings.max_image_pixels,
            "max_bytes": settings.max_file_bytes,
            "decode_timeout_s": settings.decode_timeout_s,
            "jpeg_draft": settings.decode_draft(),
            "pdq": settings.pdq_hashes,
            "decode_mode": settings.decode_mode,
        }
        options = cls(**{**fields, **{k: v for k, v in overrides.items() if v is not None}})
        options.check()
        return options

    def check(self, *, captions: bool = False, cache_itm_features: bool = False) -> None:
        """Refuse a runner that does not exist, or a stage it cannot run."""
        if self.runner not in RUNNERS:
            raise InvalidInputError(f"Unknown runner {self.runner!r}; use 'local' or 'ray'.")
        if self.runner != "local" and (captions or cache_itm_features):
            raise InvalidInputError(LOCAL_ONLY)
