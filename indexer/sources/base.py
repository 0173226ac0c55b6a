"""What every input source yields: one ``SourceItem`` per image, in a stable order.

A source names each image by a ``uri`` that the record keeps and that media/stored.py can read
back later (re-captioning, re-ranking from pixels, re-embedding with another model):

* a file: its absolute path;
* a member of a WebDataset-style tar shard: ``/abs/shard.tar#member-name``;
* an object: its URL (``s3://bucket/key``), or ``s3://bucket/shard.tar#member-name``;
* a row of a dataset file holding image bytes: ``dataset://<file>#<column>/<row>``.

File items carry a ``path`` and object items only their URL: both are read by the pipeline's
workers (parallel I/O); tar members and dataset rows carry their bytes (read sequentially).
``meta`` holds the caller's own metadata (manifest columns, a shard's ``.json``/``.txt``), stored with the record.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "heic", "heif", "avif"}
    | {"dng", "cr2", "cr3", "nef", "arw", "raf", "orf", "rw2", "pef", "srw"}  # camera RAW (media/formats/raw.py)
)


@dataclass
class SourceItem:
    uri: str
    path: Path | None = None
    data: bytes | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the source could not produce this item (recorded as a failure)
    reason: str | None = None  # the failure's short code (``missing``, ``forbidden``...); default source_error
    size: int | None = None  # bytes, when a listing says so (object stores)
    sha256: str | None = None  # content already committed under this uri, unchanged: not read again


class Source(ABC):
    """One input (a folder, a glob, a file list, a manifest, a tar shard)."""

    @abstractmethod
    def __iter__(self) -> Iterator[SourceItem]: ...

    def count(self) -> int | None:
        """How many items it will yield, when that is cheap to know (for progress and ETA)."""
        return None
