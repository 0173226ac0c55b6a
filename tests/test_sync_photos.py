"""``sync`` of a library as phones and cameras write it (HEIC from pillow-heif, DNG from PiDNG,
JPEG whose EXIF piexif wrote), changed between runs: every record's capture metadata equals what
an independent EXIF reader (exifread) reports, moved and renamed files keep their ids and
metadata, an edited file's record has the new file's metadata, deleted ones are gone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.syncing import sync_paths
from storage.collection import Collection
from tests.photo_library import Shot, independent_reading, photo_bytes, random_library, write_library

KEYS = ("taken_at", "taken_at_local", "camera_make", "camera_model", "lens")


def _rows(settings) -> dict[str, dict]:
    coll = Collection.open(settings.data_dir, "lib")
    return {r["uri"]: r for r in coll.read_table().drop(["embedding"]).to_pylist()}


def _check(rows: dict[str, dict], folder) -> None:
    files = {str(p.resolve()) for p in folder.rglob("*") if p.is_file()}
    assert set(rows) == files  # the collection equals the folder
    for uri, row in rows.items():
        want = independent_reading(Path(uri))
        for k in KEYS:
            assert row[k] == want[k], (uri, k, row[k], want[k])
        for k in ("gps_lat", "gps_lon"):
            assert (row[k] is None) == (want[k] is None) and (want[k] is None or row[k] == pytest.approx(want[k])), k


def _age(folder) -> None:
    t = os.stat(folder).st_mtime - 60
    for p in folder.rglob("*"):
        os.utime(p, (t, t))


@pytest.mark.slow
def test_sync_of_a_camera_library_keeps_metadata_and_ids_through_moves_and_edits(settings, blip_embedder, tmp_path):
    lib = tmp_path / "lib"
    shots = random_library(8, seed=11)  # JPEG, JPEG, HEIF, DNG, ...
    paths = write_library(lib, shots)
    _age(lib)
    first = sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    assert first["added"] == 8 and first["failed"] == 0
    before = _rows(settings)
    _check(before, lib)

    heic = next(p for p in paths.values() if p.suffix == ".heic")
    dng = next(p for p in paths.values() if p.suffix == ".dng")
    jpegs = [p for p in paths.values() if p.suffix == ".jpg"]
    (lib / "2024" / "trip").mkdir(parents=True)
    moved, renamed = lib / "2024" / "trip" / heic.name, lib / f"renamed{dng.suffix}"
    heic.rename(moved)
    dng.rename(renamed)
    jpegs[0].unlink()
    edited = Shot("edited", "2024:02:29 12:00:00", "+01:00", "NIKON", "Z 8", "NIKKOR Z 24-120mm", (48.1, 11.6, 520.0))
    jpegs[1].write_bytes(photo_bytes(edited))  # new content and new EXIF at the same path
    _age(lib)
    out = sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    assert (out["moved"], out["deleted"], out["updated"], out["failed"]) == (2, 1, 1, 0)
    after = _rows(settings)
    _check(after, lib)
    for old, new in ((heic, moved), (dng, renamed)):
        a, b = before[str(old)], after[str(new.resolve())]
        assert a["id"] == b["id"] and all(a[k] == b[k] for k in (*KEYS, "gps_lat", "country"))  # kept, no re-read
    e = after[str(jpegs[1])]
    assert e["id"] != before[str(jpegs[1])]["id"] and (e["camera_make"], e["camera_model"]) == ("NIKON", "Z 8")
    assert e["country_code"] == "DE"  # the place of the new GPS position
