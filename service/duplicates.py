"""Duplicate groups and stacks of a collection from settings (search/duplicates.py, storage/stacks.py)."""

from __future__ import annotations

from typing import Any

from blipsearch.config import Settings
from blipsearch.errors import InvalidInputError, NotFoundError
from search import index_store
from search.duplicates import TIERS, DuplicateOptions, find_duplicates
from storage import stacks
from storage.collection import Collection


def parse_tiers(raw: list[str] | None) -> tuple[str, ...]:
    if not raw:
        return TIERS
    bad = [t for t in raw if t not in TIERS]
    if bad:
        raise InvalidInputError(f"Unknown tier {bad[0]!r}: use {', '.join(TIERS)}.")
    return tuple(t for t in TIERS if t in raw)


def duplicates(settings: Settings, name: str, tiers: list[str] | None = None) -> dict[str, Any]:
    """Every duplicate group, each marked ``stacked`` when its keeper keeps a stack."""
    coll = Collection.open(settings.data_dir, name)
    index, _ = index_store.load(coll)
    out = find_duplicates(coll, index, DuplicateOptions.from_settings(settings), parse_tiers(tiers))
    kept = stacks.load(coll.root)
    for g in out["groups"]:
        g["stacked"] = g["keeper"] in kept
    return out


def _group(settings: Settings, name: str, group: str) -> dict[str, Any]:
    for g in duplicates(settings, name)["groups"]:
        if g["group"] == group:
            return g
    raise NotFoundError(f"No duplicate group {group!r} in {name!r} (list them: blipsearch duplicates -c {name}).")


def stack(
    settings: Settings,
    name: str,
    *,
    group: str | None = None,
    keeper: int | None = None,
    members: list[int] | None = None,
) -> dict[str, Any]:
    """Stack a duplicate group under its proposed keeper, or ``members`` under ``keeper``."""
    coll = Collection.open(settings.data_dir, name)
    if group is not None:
        g = _group(settings, name, group)
        if g["tier"] == "exact":
            raise InvalidInputError(
                f"Group {group!r} is exact copies of one record: there is nothing to stack (delete the extra files)."
            )
        ids = [m["id"] for m in g["members"]]
        return stacks.stack(coll, keeper if keeper is not None else g["keeper"], ids, group=group, tier=g["tier"])
    if keeper is None or not members:
        raise InvalidInputError("Give a group, or a keeper and its members.")
    return stacks.stack(coll, keeper, members)


def unstack(settings: Settings, name: str, *, group: str | None = None, keeper: int | None = None) -> dict[str, Any]:
    coll = Collection.open(settings.data_dir, name)
    if keeper is None:
        found = [k for k, s in stacks.load(coll.root).items() if s.get("group") == group]
        if not found:
            raise NotFoundError(f"No stack of group {group!r} in {name!r}.")
        keeper = found[0]
    return stacks.unstack(coll, keeper)


def list_stacks(settings: Settings, name: str) -> dict[str, Any]:
    coll = Collection.open(settings.data_dir, name)
    return {"collection": name, "stacks": [{"keeper": k, **s} for k, s in sorted(stacks.load(coll.root).items())]}


def stack_of(settings: Settings, name: str, rid: int) -> dict[str, Any]:
    """The stack record ``rid`` keeps or belongs to, with its records (the keeper's detail view)."""
    coll = Collection.open(settings.data_dir, name)
    s = stacks.stack_of(coll, rid)
    if s is None:
        raise NotFoundError(f"Record {rid} is in no stack.")
    recs = coll.get_records([s["keeper"], *s["members"]])
    s["records"] = [{k: recs[i].get(k) for k in ("id", "uri", "width", "height", "format", "bytes")} for i in recs]
    return s
