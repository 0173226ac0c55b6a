"""Browse a collection without a query: its live records newest first (or oldest first), a page
at a time, with the same column filters and moderation hiding as a search.

Reads only the id and filter columns of each shard, then the rows of one page, so the cost is
bounded by the collection's id count and ``limit``, never by its vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from blipsearch.config import Settings
from search.filters import Filters, allowed_ids
from storage.collection import Collection
from storage.stacks import hidden_ids

Order = Literal["newest", "oldest"]


@dataclass(frozen=True)
class BrowsePage:
    total: int  # records the filters and moderation leave visible
    records: list[dict[str, Any]]  # metadata rows (no embedding) of this page, in order


def browse(settings: Settings, name: str, filters: Filters | None, order: Order, offset: int, limit: int) -> BrowsePage:
    """One page of ``name``'s visible records: ids descending (``newest``; ids grow as records
    are added) or ascending (``oldest``). ``block`` decisions are always hidden, plus the
    ``exclude_decisions`` of ``filters``, and the members of stacks (storage/stacks.py)."""
    from moderation.store import DecisionCache
    from storage.catalog import open_catalog

    coll = Collection.open(settings.data_dir, name)
    f = filters or Filters()
    ids = allowed_ids(coll, f)
    hidden = DecisionCache(open_catalog(settings.catalog_url()), coll.name).ids({"block", *f.exclude_decisions})
    stacked = hidden_ids(coll)  # stacked duplicates: browsing, like search, shows their keeper only
    if stacked is not None:
        hidden = np.union1d(hidden, stacked) if len(hidden) else stacked
    if len(hidden):
        ids = np.setdiff1d(ids, hidden, assume_unique=True)
    ordered = ids[::-1] if order == "newest" else ids
    page = [int(i) for i in ordered[offset : offset + limit]]
    rows = coll.get_records(page)
    return BrowsePage(total=len(ids), records=[rows[i] for i in page if i in rows])
