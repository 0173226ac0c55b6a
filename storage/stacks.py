"""Stacks: duplicate groups a user folded under a keeper. Search shows the keeper only; the
others stay stored (never deleted by this) and are listed on the keeper's stack.

``stacks.json`` in the collection's folder, replaced atomically under its own lock:
``{"stacks": {"<keeper id>": {"members": [ids], "group": "...", "tier": "...", "created_at": "..."}}}``.
A record is in at most one stack; stacking a keeper's stack into another merges it. A stack
whose keeper was deleted no longer hides anything (``hidden_ids`` checks keepers are live).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from blipsearch.errors import InvalidInputError, NotFoundError
from storage.atomic import atomic_write_bytes
from storage.lock import writer_lock
from storage.reading import CollectionReads

STACKS_NAME = "stacks.json"
STACKS_LOCK = ".stacks.lock"
MAX_STACK = 10_000
_hidden_cache: dict[str, tuple[tuple[int, int], np.ndarray]] = {}


def _path(root: Path) -> Path:
    return root / STACKS_NAME


def load(root: Path) -> dict[int, dict[str, Any]]:
    try:
        raw = json.loads(_path(root).read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidInputError(
            f"{_path(root)} is unreadable ({exc}); restore it or delete it to unstack all."
        ) from None
    return {int(k): v for k, v in raw.get("stacks", {}).items()}


def _save(root: Path, stacks: dict[int, dict[str, Any]]) -> None:
    body = {"stacks": {str(k): v for k, v in sorted(stacks.items())}}
    atomic_write_bytes(_path(root), json.dumps(body, indent=1).encode())


def stack(
    coll: CollectionReads, keeper: int, members: list[int], *, group: str | None = None, tier: str | None = None
) -> dict[str, Any]:
    """Fold ``members`` under ``keeper`` (all must be live records). Returns the stack."""
    others = sorted({int(m) for m in members} - {int(keeper)})
    if not others:
        raise InvalidInputError("A stack needs a keeper and at least one other record.")
    if len(others) > MAX_STACK:
        raise InvalidInputError(f"A stack holds at most {MAX_STACK} records.")
    found = coll.get_records([keeper, *others])
    missing = [i for i in [keeper, *others] if i not in found]
    if missing:
        raise NotFoundError(f"No record with id {missing[0]} in this collection.")
    with writer_lock(coll.root / STACKS_LOCK):
        stacks = load(coll.root)
        merged = set(others)
        for k in [*others, keeper]:  # a member that keeps a stack brings its members along
            if k in stacks and k != keeper:
                merged |= set(stacks.pop(k)["members"])
        for k, s in list(stacks.items()):  # a record is in one stack only
            s["members"] = [m for m in s["members"] if m not in merged and m != keeper]
            if not s["members"]:
                del stacks[k]
        old = stacks.get(keeper, {}).get("members", [])
        entry = {
            "members": sorted(merged | set(old)),
            "group": group,
            "tier": tier,
            "created_at": datetime.now(timezone.utc).isoformat(),
        }
        stacks[keeper] = entry
        _save(coll.root, stacks)
    return {"keeper": keeper, **entry}


def unstack(coll: CollectionReads, keeper: int) -> dict[str, Any]:
    """Undo the stack of ``keeper`` (its records show in search again)."""
    with writer_lock(coll.root / STACKS_LOCK):
        stacks = load(coll.root)
        if keeper not in stacks:
            raise NotFoundError(f"Record {keeper} keeps no stack.")
        entry = stacks.pop(keeper)
        _save(coll.root, stacks)
    return {"keeper": keeper, **entry}


def stack_of(coll: CollectionReads, rid: int) -> dict[str, Any] | None:
    """The stack ``rid`` keeps or belongs to, or None."""
    for k, s in load(coll.root).items():
        if k == rid or rid in s["members"]:
            return {"keeper": k, **s}
    return None


def hidden_ids(coll: CollectionReads) -> np.ndarray | None:
    """Ids search must not return: members of stacks whose keeper is live (cached per state)."""
    path = _path(coll.root)
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    key = (mtime, sum(len(s.deleted) for s in coll.manifest.shards))
    cached = _hidden_cache.get(str(path))
    if cached is not None and cached[0] == key:
        return cached[1] if len(cached[1]) else None
    ids = [m for k, s in load(coll.root).items() if coll.locate(k) is not None for m in s["members"]]
    out = np.unique(np.asarray(ids, np.int64))
    _hidden_cache[str(path)] = (key, out)
    return out if len(out) else None
