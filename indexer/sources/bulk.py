"""Inputs beyond plain local files, recognised by what they are:

* object URLs (``s3://bucket/prefix``, a glob ``s3://bucket/shards/*.tar``, one object, a file
  list or manifest object; ``gs://``, ``az://`` with their fsspec packages) and ``https://``
  file lists and manifests;
* local or object folders laid out as a Hugging Face ``imagefolder`` (``metadata.jsonl`` /
  ``metadata.csv``), img2dataset output (``*_stats.json`` next to tar shards) or a ``datasets``
  ``save_to_disk`` folder (``state.json`` / ``dataset_dict.json``);
* Parquet and Arrow files holding image bytes (an ``Image`` struct or a binary column);
* ``pipe:<command>`` shards, only when the caller allows shell commands (the CLI's
  ``--allow-pipe``; never the API).

``open_bulk`` returns the sources for one input, or None when the input is a plain local one
that indexer/sources/__init__.py handles as before.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from blipsearch.errors import InvalidInputError
from indexer.sources.base import Source, SourceItem
from indexer.sources.datasets import DATASET_SUFFIXES, DatasetFileSource, has_image_column, is_saved_dataset
from indexer.sources.datasets import saved_dataset_sources as saved_sources
from indexer.sources.files import is_glob
from indexer.sources.imagefolder import METADATA_NAMES, ImageFolderSource, metadata_files
from indexer.sources.img2dataset import Img2DatasetSource, is_img2dataset
from indexer.sources.remote_lists import RemoteListSource, RemoteManifestSource
from indexer.sources.remote_shards import PIPE_PREFIX, ObjectShardSource, PipeShardSource
from indexer.sources.tree import Tree
from indexer.sources.webdataset import WebDatasetSource
from media.dataset_rows import split_dataset_uri
from media.objects import ObjectOptions, is_object_url, is_remote, scheme_of, scrub
from media.tar import TAR_SUFFIXES

BULK_FORMATS = ("dataset", "imagefolder", "img2dataset")


@dataclass(frozen=True)
class BulkOptions:
    input_format: str = "auto"
    path_column: str | None = None
    metadata_columns: Sequence[str] | None = None
    image_column: str | None = None
    allow_pipe: bool = False
    max_member_bytes: int | None = None
    objects: ObjectOptions = field(default_factory=ObjectOptions.from_env)


class ObjectsSource(Source):
    """Objects (or local files) named by a listing: every file is an image to read."""

    def __init__(self, tree: Tree, files: dict[str, int]) -> None:
        self.tree = tree
        self.files = files

    def __iter__(self) -> Iterator[SourceItem]:
        for name, size in self.files.items():
            yield self.tree.item(name, size)

    def count(self) -> int:
        return len(self.files)


def _file_source(tree: Tree, path: str, size: int | None, o: BulkOptions) -> Source:
    name = path.lower()
    fmt = o.input_format
    if fmt == "webdataset" or (fmt == "auto" and name.endswith(TAR_SUFFIXES)):
        return ObjectShardSource(tree, path, o.max_member_bytes)
    if fmt == "list" or (fmt == "auto" and name.endswith((".txt", ".lst"))):
        return RemoteListSource(tree, path)
    if fmt == "dataset" or (
        fmt == "auto" and name.endswith(DATASET_SUFFIXES) and has_image_column(tree, path, o.image_column)
    ):
        return DatasetFileSource(tree, path, image_column=o.image_column)
    if fmt == "manifest" or (fmt == "auto" and name.endswith((".csv", ".parquet"))):
        return RemoteManifestSource(tree, path, path_column=o.path_column, metadata_columns=o.metadata_columns)
    if tree.scheme in ("http", "https"):
        raise InvalidInputError(
            f"{scrub(tree.uri(path))!r}: http(s) URLs are read only as file lists (.txt, .lst) and manifests "
            "(.csv, .parquet); put images in an object store (s3://, gs://, az://)."
        )
    return ObjectsSource(tree, {path: size if size is not None else 0})


def _folder_sources(tree: Tree, files: dict[str, int], o: BulkOptions) -> list[Source]:
    fmt = o.input_format
    names = set(files)
    if fmt == "imagefolder" or (fmt == "auto" and metadata_files(files)):
        return [ImageFolderSource(tree, files)]
    if fmt == "img2dataset" or (fmt == "auto" and is_img2dataset(files)):
        return [Img2DatasetSource(tree, files, o.max_member_bytes)]
    if fmt == "dataset" or (fmt == "auto" and is_saved_dataset(tree, names)):
        if is_saved_dataset(tree, names):
            return saved_sources(tree, o.image_column)
        return [DatasetFileSource(tree, p, image_column=o.image_column) for p in files if p.endswith(DATASET_SUFFIXES)]
    if fmt == "webdataset":
        return [_shard(tree, p, o) for p in files if p.lower().endswith(TAR_SUFFIXES)]
    if fmt != "auto":
        return [ObjectsSource(tree, files)]
    # A plain folder or prefix: tar files in it are shards and Parquet/Arrow files with an image
    # column are datasets (a Hub repository's data/ folder); every other file is an image to read.
    parts: list[Source] = []
    rest: dict[str, int] = {}
    for p, n in files.items():
        if p.lower().endswith(TAR_SUFFIXES):
            parts.append(_shard(tree, p, o))
        elif p.lower().endswith(DATASET_SUFFIXES) and _dataset_file(tree, p, o):
            parts.append(DatasetFileSource(tree, p, image_column=o.image_column))
        else:
            rest[p] = n
    return [ObjectsSource(tree, rest), *parts] if rest else parts


def _shard(tree: Tree, path: str, o: BulkOptions) -> Source:
    if tree.local:
        return WebDatasetSource(Path(path))
    return ObjectShardSource(tree, path, o.max_member_bytes)


def _dataset_file(tree: Tree, path: str, o: BulkOptions) -> bool:
    try:
        return has_image_column(tree, path, o.image_column)
    except InvalidInputError:
        return False  # not a readable dataset file: read as an image like any other file


def _local_layout(path: Path) -> bool:
    """Whether a local folder looks like a dataset layout (checked near its top, cheaply)."""
    try:
        top = set(os.listdir(path))
    except OSError:
        return False
    if top & {"state.json", "dataset_dict.json", *METADATA_NAMES} or any(n.endswith("_stats.json") for n in top):
        return True
    lowered = [n.lower() for n in top]
    if any(n.endswith((*TAR_SUFFIXES, *DATASET_SUFFIXES)) for n in lowered):
        return True  # shards or dataset files at the top: see _folder_sources
    data = path / "data"  # a Hugging Face Hub repository's layout
    if data.is_dir() and any(n.lower().endswith(DATASET_SUFFIXES) for n in os.listdir(data)):
        return True
    for name in sorted(top)[:64]:  # split folders: train/metadata.jsonl
        sub = path / name
        if not name.startswith(".") and sub.is_dir() and any((sub / m).is_file() for m in METADATA_NAMES):
            return True
    return False


def open_bulk(raw: str, o: BulkOptions) -> list[Source] | None:
    if raw.startswith(PIPE_PREFIX):
        if not o.allow_pipe:
            raise InvalidInputError(
                f"{raw[:80]!r} is a pipe: input, which runs a shell command; pass --allow-pipe to run it "
                "(the CLI only: the API never runs commands)."
            )
        return [PipeShardSource(raw, o.max_member_bytes)]
    if scheme_of(raw):
        return _remote(raw, o)
    path = Path(raw).expanduser()
    fmt = o.input_format
    if fmt == "webdataset" and path.is_dir():
        tree = Tree.open(str(path), o.objects)
        return _folder_sources(tree, tree.files(), o)
    if path.is_dir() and (fmt in ("imagefolder", "img2dataset", "dataset") or (fmt == "auto" and _local_layout(path))):
        tree = Tree.open(str(path), o.objects)
        return _folder_sources(tree, tree.files(), o)
    if path.is_file() and path.name.lower().endswith(DATASET_SUFFIXES) and fmt in ("auto", "dataset"):
        tree = Tree.open(str(path.parent), o.objects)
        full = str(path.resolve())
        if fmt == "dataset" or has_image_column(tree, full, o.image_column):
            return [DatasetFileSource(tree, full, image_column=o.image_column)]
    if fmt in BULK_FORMATS:
        raise InvalidInputError(f"--input-format {fmt} needs a folder or dataset file; {raw!r} is neither.")
    return None


def _remote(raw: str, o: BulkOptions) -> list[Source]:
    tree = Tree.open(raw, o.objects)
    if scheme_of(raw) in ("http", "https"):
        return [_file_source(tree, tree.root, None, o)]
    if is_glob(raw.split("://", 1)[1]):
        matches = tree.glob(tree.root)
        if not matches:
            raise InvalidInputError(f"The pattern {scrub(raw)!r} matches no object.")
        if o.input_format in ("auto", "webdataset", "files"):  # shards, dataset files, images
            return _folder_sources(tree, matches, o)
        return [_file_source(tree, p, n, o) for p, n in matches.items()]
    base = Tree(tree.fs, posixpath.dirname(tree.root), tree.scheme, tree.options)
    if tree.root.lower().endswith(TAR_SUFFIXES) and o.input_format in ("auto", "webdataset"):
        # A shard (often one name of a brace list): streamed when its turn comes; a missing or
        # forbidden shard is then that shard's failure, not the whole run's.
        return [ObjectShardSource(base, tree.root, o.max_member_bytes)]
    info = tree.info()
    if info.get("type") == "directory":
        files = tree.files()
        if not files:
            raise InvalidInputError(f"The prefix {scrub(raw)!r} holds no object.")
        return _folder_sources(tree, files, o)
    return [_file_source(base, tree.root, int(info.get("size") or 0), o)]


def item_location(uri: str) -> str:
    """What an item's uri reads from: the dataset file of a row, the shard of a member."""
    parts = split_dataset_uri(uri)
    if parts is not None:
        return parts[0]
    head, sep, member = uri.rpartition("#")
    return head if sep and member and head.lower().endswith(TAR_SUFFIXES) else uri


def under_prefixes(uri: str, prefixes: Sequence[str]) -> bool:
    loc = item_location(uri)
    if not is_object_url(loc) or any(seg in (".", "..") for seg in loc.split("://", 1)[1].split("/")):
        return False
    for p in prefixes:
        root = p.rstrip("/")
        if loc == root or loc.startswith(root + "/"):
            return True
    return False


def remote_item(item: SourceItem) -> bool:
    return item.path is None and is_remote(item_location(item.uri))


def confine_objects(urls: Sequence[str], prefixes: Sequence[str]) -> list[Path | str]:
    """``urls`` (object URLs given to an API job), each under one of ``prefixes``; ForbiddenError
    otherwise. Items they lead to are checked again as they are read (``Sources``)."""
    from blipsearch.errors import ForbiddenError

    out: list[Path | str] = []
    for raw in urls:
        if "\x00" in raw or not under_prefixes(raw, prefixes):
            raise ForbiddenError(f"{scrub(raw)[:300]!r} is outside the import roots.")
        out.append(raw)
    return out
