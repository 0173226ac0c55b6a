"""WebDataset-style tar shards: members grouped by key, one image per sample.

A sample is the run of consecutive members sharing a key (the member name up to the first
dot of its basename, as WebDataset defines it): ``000123.jpg``, ``000123.json``,
``000123.txt``. The image member (first with an image extension) becomes the item; a
``.json`` object is merged into its metadata and ``.txt``/``.caption`` becomes ``text``.
Its uri is ``/abs/shard.tar#000123.jpg`` (media/stored.py reads it back).

The shard is streamed (plain or compressed tar); a truncated shard ends with a recorded
failure for the sample in progress rather than an exception. Memory is bounded by the member
sizes from the tar headers, checked before reading: an image member over ``max_member_bytes``
(BLIPSEARCH_MAX_FILE_BYTES) is a per-item failure, a metadata member over ``META_MAX_BYTES`` is
left out, and members that are neither image nor metadata are skipped unread.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from blipsearch.errors import InvalidInputError
from indexer.sources.base import IMAGE_EXTENSIONS, Source, SourceItem
from media.tar import member_uri

log = logging.getLogger(__name__)

META_EXTENSIONS = ("json", "txt", "caption")
META_MAX_BYTES = 1 << 20


def split_key(name: str) -> tuple[str, str]:
    """(key, extension) of a member name, WebDataset style: the extension starts at the first
    dot of the basename."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower() if dot else ""


def _sample_item(
    shard: Path, members: dict[str, tuple[str, bytes]], too_large: tuple[str, str] | None
) -> SourceItem | None:
    image = next(((name, data) for ext, (name, data) in members.items() if ext in IMAGE_EXTENSIONS), None)
    if image is None and too_large is not None:  # its image member was left unread: a per-item failure
        return SourceItem(member_uri(shard, too_large[0]), error=too_large[1])
    meta: dict[str, Any] = {}
    if "json" in members:
        try:
            parsed = json.loads(members["json"][1])
            meta.update(parsed if isinstance(parsed, dict) else {"json": parsed})
        except ValueError:
            meta["json_error"] = "unparseable .json member"
    for ext in ("txt", "caption"):
        if ext in members:
            meta["text"] = members[ext][1].decode("utf-8", "replace")
    if image is None:
        return None
    return SourceItem(member_uri(shard, image[0]), data=image[1], meta=meta)


class WebDatasetSource(Source):
    def __init__(self, path: Path, max_member_bytes: int | None = None) -> None:
        if not path.is_file():
            raise InvalidInputError(f"Tar shard {str(path)!r} does not exist.")
        self.path = path.resolve()
        self.max_member_bytes = max_member_bytes
        self._count: int | None = None

    def __iter__(self) -> Iterator[SourceItem]:
        key: str | None = None
        members: dict[str, tuple[str, bytes]] = {}
        too_large: tuple[str, str] | None = None  # (name, why) of the sample's image member left unread
        try:
            with self.stream() as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:  # streaming: no seeks
                for info in tar:
                    if not info.isfile():
                        continue
                    k, ext = split_key(info.name)
                    if key is not None and k != key:
                        item = _sample_item(self.path, members, too_large)
                        if item is not None:
                            yield item
                        members, too_large = {}, None
                    key = k
                    if ext in members or not self._wanted(info, ext):
                        why = self._too_large(info) if ext in IMAGE_EXTENSIONS else None
                        if why is not None and too_large is None:
                            too_large = (info.name, why)
                        continue  # skipped unread: the stream moves past it
                    fh = tar.extractfile(info)
                    if fh is not None:
                        members[ext] = (info.name, fh.read())
        except (tarfile.TarError, OSError, EOFError) as exc:
            log.warning("tar shard %s is truncated or corrupt after key %r: %s", self.path, key, exc)
            yield SourceItem(f"{self.path}#{key or ''}", error=f"truncated or corrupt tar shard: {exc}")
            return
        if members or too_large:
            item = _sample_item(self.path, members, too_large)
            if item is not None:
                yield item

    def _too_large(self, info: tarfile.TarInfo) -> str | None:
        limit = self.max_member_bytes
        if limit is not None and info.size > limit:
            return f"member is {info.size} bytes, over the {limit}-byte limit (BLIPSEARCH_MAX_FILE_BYTES)"
        return None

    def _wanted(self, info: tarfile.TarInfo, ext: str) -> bool:
        """Read this member? Images within the file limit and small metadata members only."""
        if ext in IMAGE_EXTENSIONS:
            return self._too_large(info) is None
        return ext in META_EXTENSIONS and info.size <= META_MAX_BYTES

    def stream(self) -> IO[bytes]:
        """The shard's bytes, read front to back (object-store and pipe shards override it)."""
        return open(self.path, "rb")

    def count(self) -> int | None:
        """Samples with an image, from the tar headers (cheap for an uncompressed tar)."""
        if self._count is None and self.path.name.lower().endswith(".tar"):
            keys = set()
            try:
                with tarfile.open(self.path, mode="r:") as tar:
                    for info in tar.getmembers():
                        key, ext = split_key(info.name)
                        if info.isfile() and ext in IMAGE_EXTENSIONS:
                            keys.add(key)
            except (tarfile.TarError, OSError, EOFError):
                return None
            self._count = len(keys)
        return self._count
