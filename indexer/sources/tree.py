"""A folder or prefix, local or in an object store, seen the same way by the bulk sources.

``Tree`` lists files with their sizes (an object-store prefix is listed with paging by the
store's client; zero-byte "folder" markers and hidden names are skipped), reads small files
(metadata, manifests: bounded) and opens large ones as streams. Items it makes are read later
by the pipeline's workers: a local file by its path, an object by its URL.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from blipsearch.errors import InvalidInputError
from indexer.sources.base import SourceItem
from media.objects import (
    ObjectOptions,
    failure_reason,
    filesystem,
    is_object_url,
    one_line,
    scheme_of,
    scrub,
    split_url,
    with_retries,
)

MAX_META_BYTES = 256 << 20  # a metadata file, file list or manifest read whole
# Entries (objects and zero-byte "folder" markers) one prefix listing reads at most: a prefix over
# this is refused in one line (list a narrower prefix) instead of listing without end.
MAX_LISTED = 10_000_000


def unsafe_key(key: str) -> str | None:
    """Why an object key cannot be used as a name, or None."""
    parts = key.split("/")
    if any(p in (".", "..") for p in parts):
        return "its key has a '.' or '..' segment (stores may resolve it to another object)"
    if "\x00" in key or len(key.encode("utf-8", "surrogatepass")) > 1024:
        return "its key has a NUL or is over 1024 bytes"
    return None


@dataclass
class Tree:
    fs: Any
    root: str  # a local absolute path, or "bucket/prefix"
    scheme: str | None  # None: local
    options: ObjectOptions

    @classmethod
    def open(cls, raw: str, options: ObjectOptions) -> Tree:
        if scheme_of(raw):
            scheme, path = split_url(raw)
            if scheme in ("http", "https"):  # the http filesystem takes whole URLs
                return cls(filesystem(scheme, options), raw, scheme, options)
            return cls(filesystem(scheme, options), path.rstrip("/"), scheme, options)
        import fsspec

        return cls(fsspec.filesystem("file"), str(Path(raw).expanduser().resolve()), None, options)

    @property
    def local(self) -> bool:
        return self.scheme is None

    def uri(self, path: str) -> str:
        return path if self.local or self.scheme in ("http", "https") else f"{self.scheme}://{path}"

    def join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A listing/metadata call, retried; a failure is a one-line InvalidInputError."""
        name = scrub(self.uri(args[0]) if args else self.uri(self.root))
        try:
            return with_retries(lambda: fn(*args, **kwargs), self.options)
        except InvalidInputError:
            raise
        except FileNotFoundError:
            raise InvalidInputError(f"{what} {name!r}: not found.") from None
        except PermissionError:
            raise InvalidInputError(f"{what} {name!r}: access denied (check the store's credentials).") from None
        except Exception as exc:  # noqa: BLE001 - every store client raises its own types
            raise InvalidInputError(f"{what} {name!r} failed ({failure_reason(exc)}): {one_line(exc)}") from None

    def info(self, path: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = self.call("Reading", self.fs.info, path or self.root)
        return out

    def files(self, path: str | None = None) -> dict[str, int]:
        """path → size of every file under ``path`` (default: the root), sorted by path."""
        base = path or self.root
        if self.scheme == "s3" and hasattr(self.fs, "_iterdir"):
            found = self.call("Listing", self._s3_files, base)
        else:
            found = {
                name: int(meta.get("size") or 0)
                for name, meta in self.call("Listing", self.fs.find, base, detail=True).items()
                if not _marker(name, meta)
            }
        out: dict[str, int] = {}
        for name, size in sorted(found.items()):
            rel = name[len(base) :].lstrip("/") if name.startswith(base) else name
            if any(p.startswith(".") for p in rel.split("/") if p):
                continue
            out[name] = size
        return out

    def _s3_files(self, base: str, limit: int | None = None) -> dict[str, int]:
        """The files under an S3 prefix, page by page (1,000 keys a request): "folder" markers
        are dropped as their page arrives, so memory holds the files and one page, never the
        markers (s3fs's ``find`` keeps every entry and every implied folder); at most
        ``MAX_LISTED`` entries are read, then the listing is refused in one line."""
        from fsspec.asyn import sync

        limit = MAX_LISTED if limit is None else limit
        bucket, key, _ = self.fs.split_path(base)
        prefix = key.rstrip("/") + "/" if key else ""

        async def collect() -> dict[str, int]:
            out: dict[str, int] = {}
            seen = 0
            async for entry in self.fs._iterdir(bucket, delimiter="", prefix=prefix):
                seen += 1
                if seen > limit:
                    raise InvalidInputError(
                        f"The prefix {scrub(self.uri(base))!r} holds over {limit:,} entries (objects and "
                        "folder markers); list a narrower prefix."
                    )
                if not _marker(entry["name"], entry):
                    out[entry["name"]] = int(entry.get("size") or 0)
            return out

        files: dict[str, int] = sync(self.fs.loop, collect)
        return files

    def glob(self, pattern: str) -> dict[str, int]:
        found = self.call("Listing", self.fs.glob, pattern, detail=True)
        return {n: int(m.get("size") or 0) for n, m in sorted(found.items()) if m.get("type") != "directory"}

    def read_bytes(self, path: str, limit: int = MAX_META_BYTES) -> bytes:
        data: bytes = self.call("Reading", self.fs.cat_file, path, start=0, end=limit + 1)
        if len(data) > limit:
            raise InvalidInputError(f"{scrub(self.uri(path))!r} is over {limit} bytes.")
        return data

    def open_stream(self, path: str) -> IO[bytes]:
        if self.local:
            return open(path, "rb")
        fh: IO[bytes] = self.call("Opening", self.fs.open, path, "rb", block_size=8 << 20, cache_type="readahead")
        return fh

    def item(self, path: str, size: int | None = None, meta: dict[str, Any] | None = None) -> SourceItem:
        """A file to index: read later by the pipeline (local path or object URL)."""
        meta = meta or {}
        if self.local:
            return SourceItem(path, path=Path(path), meta=meta)
        why = unsafe_key(path.partition("/")[2])
        if why:
            return SourceItem(self.uri(path), meta=meta, error=f"not read: {why}")
        return SourceItem(self.uri(path), size=size, meta=meta)


def _marker(name: str, meta: dict[str, Any]) -> bool:
    """A directory entry or a zero-byte "folder" marker (``photos/empty/``): not a file."""
    return meta.get("type") == "directory" or (name.endswith("/") and not meta.get("size"))


def is_input_url(raw: str) -> bool:
    return scheme_of(raw) is not None


def local_or_url(raw: str) -> str:
    return raw if scheme_of(raw) else os.path.abspath(os.path.expanduser(raw))


def walk_items(tree: Tree, files: dict[str, int]) -> Iterator[SourceItem]:
    for name, size in files.items():
        yield tree.item(name, size)


__all__ = ["Tree", "is_input_url", "is_object_url", "local_or_url", "unsafe_key", "walk_items"]
