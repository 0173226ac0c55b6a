"""Resume and re-runs without re-reading: an object whose uri is committed with the size the
listing reports again is marked with the committed sha256, so the pipeline counts it as
already indexed without fetching it (a re-run over an unchanged bucket reads no object).

Only items whose size comes from a listing (object stores) are marked: local files are read and
hashed as before (cheap, and exact for a file rewritten in place with the same size). An object
rewritten in place with exactly the same size is not re-read; a changed size is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from indexer.sources.base import SourceItem


def skip_unchanged(items: Iterable[SourceItem], coll: Any) -> Iterator[SourceItem]:
    committed: dict[str, tuple[str, int]] | None = None
    for item in items:
        if item.size is not None and item.error is None and item.data is None and item.sha256 is None:
            if committed is None:
                committed = _committed(coll)
            known = committed.get(item.uri)
            if known is not None and known[1] == item.size:
                item.sha256 = known[0]
        yield item


def _committed(coll: Any) -> dict[str, tuple[str, int]]:
    table = coll.read_table(["uri", "sha256", "bytes"])
    uris, shas, sizes = (table.column(c).to_pylist() for c in ("uri", "sha256", "bytes"))
    return {u: (s, n) for u, s, n in zip(uris, shas, sizes, strict=True) if u and s and n is not None}
