"""The data dir's layout: which names a collection may take, and the move of a data dir of the
earlier layout (collections directly in ``DATA_DIR``, next to ``catalog.db``) into the
collections' own namespace (storage/versions.py).

The move is idempotent and kill-safe: every step is one ``rename``/``symlink`` of something
whose old place is only removed after its new place exists, nothing is ever deleted but a
link that has a twin in the new place, and a re-run (the next open) finishes a move that was
interrupted. Two processes migrating at once are serialised by a lock file.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

from blipsearch.errors import CollectionNotFoundError, InvalidInputError, StorageError
from storage import versions
from storage.lock import writer_lock
from storage.manifest import MANIFEST_NAME

log = logging.getLogger(__name__)

# Names the data dir (or a collection folder) holds itself, compared case-insensitively so
# that a case-insensitive file system cannot alias them either.
RESERVED_NAMES = frozenset(
    {"catalog.db", "catalog", "collections", "policies", "uploads", "thumbs", "versions", "trash", "tmp"}
)
RESERVED_SUFFIXES = (".db", "-wal", "-shm", "-journal", ".sqlite", ".sqlite3", ".lock", ".tmp", ".link", ".json")
MIGRATE_LOCK = ".migrate.lock"

_done: set[str] = set()
_done_lock = threading.Lock()


def reserved_reason(name: str) -> str | None:
    """Why ``name`` may not name a collection, or None."""
    low = name.lower()
    if low.startswith("."):
        return "names starting with '.' are the data dir's own"
    if low in RESERVED_NAMES:
        return f"{name!r} is a name the data dir uses itself"
    for suffix in RESERVED_SUFFIXES:
        if low.endswith(suffix):
            return f"names ending in {suffix!r} are reserved for the data dir's own files"
    return None


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _any_case(text: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else ("\\." if c == "." else c) for c in text)


def name_pattern() -> str:
    """``validate_name(name, new=True)``'s rule as one regular expression that Python's ``re``
    and an HTML ``pattern`` attribute (JavaScript, anchored, ``v`` flag) read alike: the syntax
    of NAME_RE, no "..", and none of the reserved names and suffixes (any case)."""
    names = "|".join(_any_case(n) for n in sorted(RESERVED_NAMES))
    suffixes = "|".join(_any_case(x) for x in RESERVED_SUFFIXES)
    return rf"(?!.*\.\.)(?!(?:{names})$)(?!.*(?:{suffixes})$)[A-Za-z0-9][A-Za-z0-9_\.\-]{{0,63}}"


def validate_name(name: str, *, new: bool = True) -> str:
    """``name`` if it may name a collection. Syntax errors raise InvalidInputError; a name
    reserved for the data dir's own files (storage/layout.py) too when ``new`` (creating),
    else CollectionNotFoundError (no collection can have it)."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise InvalidInputError(
            f"Invalid collection name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit."
        )
    why = reserved_reason(name)
    if why and new:
        raise InvalidInputError(f"Invalid collection name {name!r}: {why}.")
    if why:
        raise CollectionNotFoundError(f"Collection {name!r} does not exist.")
    return name


def ensure_layout(data_dir: Path) -> None:
    """Move an earlier-layout data dir into the current one (once per process and data dir)."""
    data_dir = Path(data_dir)
    key = str(data_dir.absolute())
    if key in _done:
        return
    with _done_lock:
        if key in _done:
            return
        if not data_dir.is_dir():
            return  # a new data dir: nothing to move (yet)
        if _needs_migration(data_dir):
            coll_dir = versions.collections_dir(data_dir)
            if coll_dir.is_symlink() or (coll_dir.is_dir() and (coll_dir / MANIFEST_NAME).exists()):
                raise StorageError(
                    "The data dir holds a collection named 'collections' from an earlier version, which now "
                    "names the collections' own folder; rename it (with an earlier blipsearch) and retry."
                )
            coll_dir.mkdir(exist_ok=True)
            with writer_lock(coll_dir / MIGRATE_LOCK):
                migrate(data_dir)
        _done.add(key)


def _legacy_link_target(path: Path) -> str | None:
    """The ``.versions/<name>/<version>`` target of an earlier-layout live link, else None."""
    if not path.is_symlink():
        return None
    target = os.readlink(path)
    parts = Path(target).parts
    if len(parts) == 3 and parts[0] == versions.VERSIONS and parts[1] == path.name:
        return target
    return None


def _legacy_entries(data_dir: Path) -> list[Path]:
    out = []
    for entry in data_dir.iterdir():
        if entry.name == versions.COLLECTIONS:
            continue
        if _legacy_link_target(entry) is not None:
            out.append(entry)
        elif entry.name.startswith(".") and entry.name.endswith(".link") and entry.is_symlink():
            out.append(entry)  # a crashed link() of the earlier layout
        elif not entry.is_symlink() and entry.is_dir() and (entry / MANIFEST_NAME).is_file():
            out.append(entry)  # an unversioned (legacy) collection folder
    return out


def _needs_migration(data_dir: Path) -> bool:
    return (data_dir / versions.VERSIONS).is_dir() or bool(_legacy_entries(data_dir))


def migrate(data_dir: Path) -> list[str]:
    """Move everything of the earlier layout into ``DATA_DIR/collections``; returns the names
    of the collections moved. Safe to re-run at any point of an interrupted run."""
    data_dir = Path(data_dir)
    coll_dir = versions.collections_dir(data_dir)
    coll_dir.mkdir(parents=True, exist_ok=True)
    moved: list[str] = []
    # 1. Version folders: one rename of the whole tree, or (when a previous run already
    #    created the new one) folder by folder; a folder whose twin exists is left in place.
    old_versions, new_versions = data_dir / versions.VERSIONS, coll_dir / versions.VERSIONS
    if old_versions.is_dir() and not old_versions.is_symlink():
        if not new_versions.exists():
            os.rename(old_versions, new_versions)
        else:
            for named in sorted(old_versions.iterdir()):
                dest = new_versions / named.name
                if not dest.exists():
                    os.rename(named, dest)
                    continue
                for version in sorted(named.iterdir()):
                    if not (dest / version.name).exists():
                        os.rename(version, dest / version.name)
                _rmdir_quiet(named)
            _rmdir_quiet(old_versions)
    # 2. Live links: the same relative target is valid from the new folder. The old link
    #    goes only once its twin exists.
    for entry in _legacy_entries(data_dir):
        target = _legacy_link_target(entry)
        if target is not None:
            new = coll_dir / entry.name
            if not new.is_symlink() and not new.exists():
                tmp = coll_dir / f".{entry.name}.migrate.link"
                tmp.unlink(missing_ok=True)
                os.symlink(target, tmp)
                os.replace(tmp, new)
            entry.unlink()
            moved.append(entry.name)
        elif entry.is_symlink():  # a leftover temporary link
            entry.unlink()
        else:  # 3. an unversioned folder moves in one rename
            new = coll_dir / entry.name
            if new.exists() or new.is_symlink():
                log.warning("not moving %s: the collections folder already holds that name", entry.name)
                continue
            os.rename(entry, new)
            moved.append(entry.name)
    if moved:
        log.info("moved %d collection(s) into %s/: %s", len(moved), versions.COLLECTIONS, ", ".join(moved))
    return moved


def _rmdir_quiet(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def list_names(data_dir: Path) -> list[str]:
    """Names of the collections in the data dir (those with a live manifest)."""
    ensure_layout(data_dir)
    root = versions.collections_dir(data_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if not p.name.startswith(".") and reserved_reason(p.name) is None and (p / MANIFEST_NAME).is_file()
    )
