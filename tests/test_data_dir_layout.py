"""Collections have a namespace of their own (DATA_DIR/collections), names
that could collide with the data dir's files are refused, and data dirs of the earlier layout
are moved on open, idempotently and without loss whatever step a crash interrupts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from blipsearch.config import Settings
from blipsearch.errors import CollectionNotFoundError, InvalidInputError
from service.indexing import index_paths
from storage import layout, versions
from storage.api_keys import create_key
from storage.catalog import open_catalog
from storage.collection import Collection
from storage.layout import validate_name
from tests.helpers import write_images

COLLIDING = [
    "catalog.db",
    "Catalog.DB",
    "catalog.db-wal",
    "catalog.db-shm",
    "catalog.db-journal",
    "policies",
    "POLICIES",
    "uploads",
    "collections",
    "x.db",
    "x-wal",
    "x.lock",
    ".versions",
    ".trash",
]


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("layout")
    settings = Settings(data_dir=root / "data", model=str(tiny_models["blip-itm"]), batch_size=4)
    (root / "data" / "policies").mkdir(parents=True)
    (root / "data" / "policies" / "p.yaml").write_text("name: p\n")
    catalog = open_catalog(settings.catalog_url())
    key = create_key(catalog, "w", "admin")[0]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {key}"}, settings


@pytest.mark.parametrize("name", COLLIDING)
def test_names_that_collide_with_data_dir_files_are_refused(env, name):
    client, h, settings = env
    r = client.post("/v1/collections", json={"name": name}, headers=h)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    # The catalog and the policy folder survive, and every route still answers.
    data = settings.data_dir
    assert (data / "catalog.db").is_file() and not (data / "catalog.db").is_symlink()
    assert (data / "policies" / "p.yaml").is_file() and not (data / "policies").is_symlink()
    assert client.get("/v1/collections", headers=h).status_code == 200
    assert client.post("/v1/collections", json={"name": "fine"}, headers=h).status_code in (201, 409)


def test_get_of_a_data_dir_file_is_404_without_a_path(env):
    client, h, settings = env
    for name in ("catalog.db", "policies", "catalog.db-wal"):
        r = client.get(f"/v1/collections/{name}", headers=h)
        assert r.status_code == 404, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert str(settings.data_dir) not in r.text and "/" not in r.json()["detail"]


def test_new_collections_live_in_their_own_folder(env):
    client, h, settings = env
    assert client.post("/v1/collections", json={"name": "own"}, headers=h).status_code == 201
    link = settings.data_dir / "collections" / "own"
    assert link.is_symlink() and (link / "manifest.json").is_file()
    assert os.readlink(link).startswith(".versions/own/")
    assert not (settings.data_dir / "own").exists()
    assert "own" in [c["name"] for c in client.get("/v1/collections").json()["collections"]]
    assert client.delete("/v1/collections/own", headers=h).status_code == 204
    assert not link.exists() and not link.is_symlink()


def test_validate_name_reserved_is_not_found_for_reads():
    with pytest.raises(InvalidInputError):
        validate_name("catalog.db")
    with pytest.raises(CollectionNotFoundError):
        validate_name("catalog.db", new=False)
    assert validate_name("holiday-2024.v2") == "holiday-2024.v2"


# -- migration of the earlier layout --------------------------------------------------------


def _to_old_layout(data_dir: Path) -> None:
    """Rewrite a data dir into the earlier layout: DATA_DIR/<name> -> .versions/<name>/<v>."""
    coll_dir = data_dir / "collections"
    os.rename(coll_dir / ".versions", data_dir / ".versions")
    for entry in coll_dir.iterdir():
        if entry.is_symlink():
            os.symlink(os.readlink(entry), data_dir / entry.name)
            entry.unlink()
        elif entry.is_dir() and (entry / "manifest.json").is_file():
            os.rename(entry, data_dir / entry.name)
    shutil.rmtree(coll_dir)


def _snapshot(data_dir: Path) -> dict[str, bytes]:
    """Every regular file under the data dir's version folders (where records live)."""
    out = {}
    for base in (data_dir / ".versions", data_dir / "collections" / ".versions"):
        for p in base.rglob("*") if base.is_dir() else []:
            if p.is_file() and not p.name.endswith(".lock"):
                out[str(p.relative_to(base))] = p.read_bytes()
    return out


@pytest.fixture
def old_data_dir(tmp_path, tiny_models):
    write_images(tmp_path / "imgs", 6)
    settings = Settings(data_dir=tmp_path / "data", model=str(tiny_models["blip-itm"]), batch_size=4)
    index_paths(settings, [tmp_path / "imgs"], "alpha", progress=False)
    index_paths(settings, [tmp_path / "imgs"], "beta", progress=False)
    # beta becomes an unversioned folder of an even earlier version
    version = versions.current(settings.data_dir, "beta")
    beta = settings.data_dir / "collections" / "beta"
    beta.unlink()
    os.rename(settings.data_dir / "collections" / ".versions" / "beta" / version, beta)
    _to_old_layout(settings.data_dir)
    layout._done.clear()
    assert (settings.data_dir / "alpha").is_symlink() and (settings.data_dir / "beta" / "manifest.json").is_file()
    return settings


def _check_migrated(settings: Settings, before: dict[str, bytes]) -> None:
    data = settings.data_dir
    assert not (data / "alpha").exists() and not (data / "alpha").is_symlink()
    assert not (data / "beta").exists() and not (data / ".versions").exists()
    assert (data / "collections" / "alpha").is_symlink()
    for name in ("alpha", "beta"):
        coll = Collection.open(data, name)
        assert coll.manifest.count == 6 and len(coll.get_records(list(range(6)))) == 6
    after = {k: v for k, v in _snapshot(data).items() if not k.startswith("beta")}
    assert after == {k: v for k, v in before.items() if not k.startswith("beta")}
    assert layout.list_names(data) == ["alpha", "beta"]
    assert (data / "catalog.db").is_file()


def test_old_layout_is_moved_on_open(old_data_dir):
    before = _snapshot(old_data_dir.data_dir)
    coll = Collection.open(old_data_dir.data_dir, "alpha")  # the first open moves everything
    assert coll.manifest.count == 6
    _check_migrated(old_data_dir, before)
    assert layout.migrate(old_data_dir.data_dir) == []  # idempotent


class _Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", range(1, 8))
def test_a_migration_interrupted_at_any_step_loses_nothing(old_data_dir, monkeypatch, crash_at):
    before = _snapshot(old_data_dir.data_dir)
    calls = {"n": 0}
    real = {"rename": os.rename, "replace": os.replace, "symlink": os.symlink, "unlink": Path.unlink}

    def counted(kind):
        def step(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise _Crash(kind)
            return real[kind](*args, **kwargs)

        return step

    for kind in ("rename", "replace", "symlink"):
        monkeypatch.setattr(f"storage.layout.os.{kind}", counted(kind))
    monkeypatch.setattr(Path, "unlink", counted("unlink"))
    try:
        layout.migrate(old_data_dir.data_dir)
    except _Crash:
        pass
    monkeypatch.undo()
    layout._done.clear()
    Collection.open(old_data_dir.data_dir, "beta")  # the next open finishes the move
    _check_migrated(old_data_dir, before)
