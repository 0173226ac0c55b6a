"""Collection versions: the layout that makes a model upgrade an atomic swap.

Collections live in a namespace of their own, apart from the data dir's files (``catalog.db``
and its ``-wal``/``-shm``, ``policies/``, ...), so no collection name can replace one of them::

    DATA_DIR/collections/<name>      -> .versions/<name>/<version>   (a relative symlink)
    DATA_DIR/collections/.versions/<name>/<version>/manifest.json, shards, index ...
    DATA_DIR/collections/.trash/     deleted collections, on their way out

Readers and writers open ``DATA_DIR/collections/<name>``; a ``Collection`` object resolves it
once and is pinned to that version's folder. ``blipsearch reembed`` builds a new version next
to the live one, then ``swap`` replaces the symlink with ``os.replace`` (atomic: every open sees
either the old or the new version) and marks the old manifest ``superseded_by``, so a writer
still holding the old version fails cleanly instead of writing where nobody reads, and live
engines reload on their next request. Old versions stay until dropped.

Data dirs of the earlier layout (collections directly in ``DATA_DIR``) are moved into this
one when first opened (storage/layout.py). Collections created before versions existed are
plain folders; ``adopt_legacy`` moves one into the layout (the only step that is two renames,
done before a re-embed starts).
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

from storage import faults

COLLECTIONS = "collections"
VERSIONS = ".versions"
TRASH = ".trash"


def collections_dir(data_dir: Path) -> Path:
    """The collections' own namespace inside the data dir."""
    return Path(data_dir) / COLLECTIONS


def live_path(data_dir: Path, name: str) -> Path:
    """``DATA_DIR/collections/<name>``: the live version's link (or a legacy plain folder)."""
    return collections_dir(data_dir) / name


def versions_dir(data_dir: Path, name: str) -> Path:
    return collections_dir(data_dir) / VERSIONS / name


def trash_dir(data_dir: Path) -> Path:
    return collections_dir(data_dir) / TRASH


def new_version_id(tag: str = "") -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"v{stamp}-{tag[:12] or 'x'}-{uuid.uuid4().hex[:6]}"


def link(data_dir: Path, name: str, version: str) -> None:
    """Point ``DATA_DIR/collections/<name>`` at ``version``, atomically."""
    target = Path(VERSIONS) / name / version
    folder = collections_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.link"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, folder / name)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    faults.step(f"linked {name}")


def current(data_dir: Path, name: str) -> str | None:
    """The live version's id, or None for a legacy (unversioned) folder or no collection."""
    path = live_path(data_dir, name)
    if not path.is_symlink():
        return None
    return Path(os.readlink(path)).name


def list_versions(data_dir: Path, name: str) -> list[str]:
    root = versions_dir(data_dir, name)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def adopt_legacy(data_dir: Path, name: str) -> str:
    """Move a plain collection folder into the versioned layout; returns its version id.
    Call with the collection's writer lock held."""
    path = live_path(data_dir, name)
    if path.is_symlink():
        return Path(os.readlink(path)).name
    version = new_version_id("legacy")
    dest = versions_dir(data_dir, name) / version
    dest.parent.mkdir(parents=True, exist_ok=True)
    path.rename(dest)
    os.symlink(Path(VERSIONS) / name / version, path)
    return version


def drop(data_dir: Path, name: str, version: str) -> None:
    """Delete a version that is not the live one."""
    if version == current(data_dir, name):
        raise ValueError(f"{version} is the live version of {name!r}")
    shutil.rmtree(versions_dir(data_dir, name) / version, ignore_errors=True)
