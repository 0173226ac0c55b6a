"""``sync``: files moved, renamed, deleted, edited and copied between runs; the collection ends
equal to the folder, moved records keep their ids and embeddings, unchanged files are not read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from blipsearch.errors import InvalidInputError
from cli.main import app
from service.syncing import sync_paths
from storage import sync_state
from storage.collection import Collection
from tests.helpers import make_image, write_images


def _by_uri(settings) -> dict[str, tuple[int, str]]:
    return Collection.open(settings.data_dir, "lib").live_uris()


def _age(folder: Path) -> None:
    """Files written a minute ago (as a camera's are): past the timestamp granularity, so not racy."""
    t = os.stat(folder).st_mtime - 60
    for p in folder.rglob("*"):
        os.utime(p, (t, t), follow_symlinks=False)


def _files(folder: Path) -> set[str]:
    return {str(p.resolve()) for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")}


def test_sync_follows_moves_renames_deletes_and_edits(settings, blip_embedder, tmp_path):
    lib = tmp_path / "lib"
    paths = write_images(lib, 6)
    (lib / "sub").mkdir()
    _age(lib)
    first = sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    assert first["added"] == 6 and first["deleted"] == 0 and first["hashed"] == 6
    before = _by_uri(settings)
    assert set(before) == _files(lib)
    coll = Collection.open(settings.data_dir, "lib")
    ids0, emb0 = coll.all_embeddings()

    again = sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    assert again["unchanged"] == 6 and again["hashed"] == 0 and again["added"] == again["moved"] == 0

    moved = lib / "sub" / "moved.jpg"
    paths[0].rename(moved)  # moved into a subfolder
    paths[1].rename(lib / "renamed.jpg")  # renamed in place
    paths[2].unlink()  # deleted
    make_image(500).save(paths[3], "JPEG")  # edited in place: new content
    shutil.copy(paths[4], lib / "copy.jpg")  # an exact copy
    write_images(lib / "new", 1, start=77)  # a new file
    (lib / "notes.txt").write_text("not an image")  # fails: reported, never a record
    _age(lib)
    out = sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    assert (out["moved"], out["deleted"], out["added"], out["updated"], out["copies"]) == (2, 1, 2, 1, 1)
    assert out["failed"] == 1 and out["failures"][0]["path"].endswith("notes.txt")
    after = _by_uri(settings)
    images = _files(lib) - {str((lib / "notes.txt").resolve()), str((lib / "copy.jpg").resolve())}
    assert set(after) == images  # the collection equals the folder (the copy is one record)
    assert after[str(moved)][0] == before[str(paths[0])][0]  # ids of moved files kept
    assert after[str(lib / "renamed.jpg")][0] == before[str(paths[1])][0]
    assert after[str(paths[3])][0] != before[str(paths[3])][0]  # edited: a new record
    coll = Collection.open(settings.data_dir, "lib")
    ids1, emb1 = coll.all_embeddings()
    rid = before[str(paths[0])][0]
    np.testing.assert_array_equal(emb1[ids1 == rid], emb0[ids0 == rid])  # not re-embedded
    assert coll.manifest.index is not None and coll.manifest.index.ntotal == len(images)
    copies = sync_state.copies(coll.root)
    assert sorted(copies[before[str(paths[4])][1]]) == sorted([str(paths[4]), str((lib / "copy.jpg").resolve())])

    # The unreadable file is not read again while unchanged; nothing else changes either.
    quiet = sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    assert quiet["hashed"] == 0 and quiet["added"] == quiet["moved"] == quiet["deleted"] == 0
    assert _by_uri(settings) == after


def test_sync_lost_state_rehashes_and_changes_nothing(settings, blip_embedder, tmp_path):
    lib = tmp_path / "lib"
    write_images(lib, 3)
    _age(lib)
    sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    before = _by_uri(settings)
    coll = Collection.open(settings.data_dir, "lib")
    sync_state.state_path(coll.root).write_text("{ torn")
    out = sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    assert out["hashed"] == 3 and out["added"] == out["deleted"] == out["moved"] == 0
    assert _by_uri(settings) == before


def test_sync_bad_folders_are_one_line_errors(settings, blip_embedder, tmp_path):
    lib = tmp_path / "lib"
    write_images(lib, 2)
    sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="is not a folder"):
        sync_paths(settings, [tmp_path / "file.jpg"], "lib", embedder=blip_embedder)
    # the folder becomes a symlink: refused, its records kept
    lib.rename(tmp_path / "real")
    os.symlink(tmp_path / "real", lib)
    with pytest.raises(InvalidInputError, match="is a symlink"):
        sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    lib.unlink()
    with pytest.raises(InvalidInputError, match="does not exist"):
        sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    assert Collection.open(settings.data_dir, "lib").manifest.count == 2
    runner = CliRunner()
    res = runner.invoke(app, ["sync", str(lib), "--collection", "lib", "--data-dir", str(settings.data_dir)])
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0 and "does not exist" in res.output


def test_sync_never_indexes_its_own_data_dir(settings, blip_embedder, tmp_path):
    lib = tmp_path / "lib"
    write_images(lib, 2)
    settings.data_dir = lib / "blipsearch-data"  # inside the synced folder
    for _ in range(2):
        out = sync_paths(settings, [lib], "lib", embedder=blip_embedder)
        assert out["failed"] == 0 and out["deleted"] == 0
    assert set(_by_uri(settings)) == {str(p.resolve()) for p in lib.glob("*.jpg")}


def test_scan_keeps_the_symlink_and_hidden_guards_without_resolving_each_file(tmp_path, monkeypatch):
    """The stat-based scan: regular files by their path (no realpath per file), a symlinked file
    only when its target is inside the folder (under the target's path), symlinked folders and
    hidden names never entered, the data dir excluded; an unchanged file is not read."""
    from indexer.sync import SyncReport, _Scan

    lib, outside = tmp_path / "lib", tmp_path / "outside"
    (lib / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    (lib / "one.jpg").write_bytes(b"1")
    (lib / "a" / "b" / "two.jpg").write_bytes(b"2")
    (lib / ".hidden.jpg").write_bytes(b"h")
    (lib / ".cache").mkdir()
    (lib / ".cache" / "three.jpg").write_bytes(b"3")
    (lib / "data").mkdir()
    (lib / "data" / "shard.jpg").write_bytes(b"d")
    (outside / "secret.jpg").write_bytes(b"s")
    os.symlink(outside / "secret.jpg", lib / "leak.jpg")  # points out of the folder: never read
    os.symlink(outside, lib / "linked-dir")  # a symlinked folder: not followed
    os.symlink(lib / "a" / "b" / "two.jpg", lib / "alias.jpg")  # inside: the target, once
    os.symlink(lib / "nowhere.jpg", lib / "dangling.jpg")
    os.symlink(lib / "loop.jpg", lib / "loop.jpg")
    _age(lib)
    real = lib.resolve()
    resolved: list[str] = []
    orig = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda p, **k: resolved.append(str(p)) or orig(p, **k))
    report = SyncReport("lib", [str(real)])
    scan = _Scan([real], {}, 0.0, report, [real / "data"])
    assert sorted(scan.present) == [str(real / "a" / "b" / "two.jpg"), str(real / "one.jpg")]
    assert report.files == 2 and report.hashed == 2 and report.failed == 0
    assert {Path(p).name for p in resolved} == {"leak.jpg", "alias.jpg", "dangling.jpg", "loop.jpg", "linked-dir"}
    again = SyncReport("lib", [str(real)])
    scan2 = _Scan([real], scan.present, 0.0, again, [real / "data"])
    assert again.unchanged == 2 and again.hashed == 0 and scan2.present == scan.present


def test_reembed_carries_stacks_and_the_sync_state(settings, blip_embedder, blip2_embedder, tmp_path):
    """A re-embed rebuilds the collection in a new version folder: its stacks (by id, which the
    re-embed keeps) and what sync saw (so an unchanged folder is still not re-read) come along."""
    from indexer.reembed import reembed
    from storage import stacks

    lib = tmp_path / "lib"
    write_images(lib, 4)
    _age(lib)
    sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    coll = Collection.open(settings.data_dir, "lib")
    ids = sorted(r for r, _ in coll.live_uris().values())
    stacks.stack(coll, ids[0], ids[1:3], group="g1", tier="near")
    state0, stacks0, root0 = sync_state.load(coll.root), stacks.load(coll.root), coll.root.resolve()
    assert len(state0) == 4 and list(stacks0) == [ids[0]]

    reembed(settings, "lib", "blip2", embedder=blip2_embedder, progress=False)
    new = Collection.open(settings.data_dir, "lib")
    assert new.root.resolve() != root0 and new.manifest.model_fingerprint == blip2_embedder.fingerprint
    assert stacks.load(new.root) == stacks0
    assert sorted(stacks.hidden_ids(new).tolist()) == ids[1:3]  # search still hides the members
    assert sync_state.load(new.root) == state0
    out = sync_paths(settings, [lib], "lib", embedder=blip2_embedder)
    assert out["hashed"] == 0 and out["unchanged"] == 4
    assert out["added"] == out["deleted"] == out["moved"] == 0
