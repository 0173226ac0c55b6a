"""img2dataset output folders (``--output_format webdataset``): ``00000.tar`` shards, each with
``00000.parquet`` (one row per attempted URL: ``key``, ``url``, ``caption``, ``status``,
``error_message``, sizes...) and ``00000_stats.json``.

Each sample in a shard gets its Parquet row's columns as metadata (joined by ``key``; the
sample's own ``.json``/``.txt`` members are merged over them). Rows whose download failed
(``status`` other than ``success``) have no image: each is reported as a failure with its
status and error message, never silently dropped. The folder is recognised by its
``*_stats.json`` files next to tar shards.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from indexer.sources.base import Source, SourceItem
from indexer.sources.manifest import _jsonable
from indexer.sources.remote_shards import ObjectShardSource
from indexer.sources.tree import Tree
from indexer.sources.webdataset import WebDatasetSource, split_key
from media.tar import TAR_SUFFIXES, member_names

DROPPED = ("status", "error_message")


def is_img2dataset(files: dict[str, int]) -> bool:
    names = [posixpath.basename(p) for p in files]
    return any(n.endswith("_stats.json") for n in names) and any(n.endswith(TAR_SUFFIXES) for n in names)


def _shard_stem(path: str) -> str:
    base = posixpath.basename(path)
    for suffix in TAR_SUFFIXES:
        if base.lower().endswith(suffix):
            return posixpath.join(posixpath.dirname(path), base[: -len(suffix)])
    return path


class Img2DatasetSource(Source):
    def __init__(self, tree: Tree, files: dict[str, int], max_member_bytes: int | None = None) -> None:
        self.tree = tree
        self.files = files
        self.shards = [p for p in files if p.lower().endswith(TAR_SUFFIXES)]
        self.max_member_bytes = max_member_bytes

    def _rows(self, shard: str) -> dict[str, dict[str, Any]]:
        import pyarrow.parquet as pq

        parquet = _shard_stem(shard) + ".parquet"
        if parquet not in self.files:
            return {}
        with self.tree.open_stream(parquet) as fh:
            table = pq.read_table(fh)
        cols = {c: table.column(c).to_pylist() for c in table.schema.names}
        keys = cols.get("key") or []
        return {str(k): {c: _jsonable(v[i]) for c, v in cols.items()} for i, k in enumerate(keys) if k is not None}

    def _shard(self, shard: str) -> WebDatasetSource:
        if self.tree.local:
            return WebDatasetSource(Path(shard))
        return ObjectShardSource(self.tree, shard, self.max_member_bytes)

    def __iter__(self) -> Iterator[SourceItem]:
        for shard in self.shards:
            try:
                rows = self._rows(shard)
            except Exception as exc:  # noqa: BLE001 - an unreadable Parquet: the shard is indexed without it
                rows = {}
                yield SourceItem(f"{self.tree.uri(shard)}#", error=f"unreadable img2dataset Parquet: {exc}")
            seen: set[str] = set()
            for item in self._shard(shard):
                key = posixpath.basename(split_key(member_names(item.uri.rpartition("#")[2])[0])[0])
                row = rows.get(key)
                if row is not None:
                    seen.add(key)
                    base = {k: v for k, v in row.items() if k not in DROPPED}
                    item.meta = {**base, **item.meta}
                yield item
            for key, row in rows.items():
                status = row.get("status")
                if key not in seen and status != "success":
                    why = row.get("error_message") or "no error message"
                    meta = {k: v for k, v in row.items() if k not in DROPPED}
                    yield SourceItem(
                        f"{self.tree.uri(shard)}#{key}", meta=meta, error=f"not downloaded ({status}): {why}"
                    )

    def count(self) -> int | None:
        return None
