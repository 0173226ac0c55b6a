"""Bursts end to end: shots with EXIF capture times seconds apart, indexed by ``sync``, grouped
as a burst; a shot taken much later is not. Runs where records have a ``taken_at`` column."""

from __future__ import annotations

import pytest
from PIL import Image

from service import duplicates as svc
from service.syncing import sync_paths
from storage.schema import RECORD_FIELDS
from tests.helpers import make_image

pytestmark = pytest.mark.skipif("taken_at" not in RECORD_FIELDS, reason="capture metadata (taken_at) not recorded")


def _shot(path, i: int, when: str) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = when  # DateTimeOriginal
    exif.get_ifd(0x8769)[0x9011] = "+00:00"  # OffsetTimeOriginal
    make_image(i, (160, 120)).save(path, "JPEG", exif=exif.tobytes())


def test_shots_seconds_apart_are_a_burst(settings, blip_embedder, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    _shot(lib / "a.jpg", 1, "2024:05:01 10:00:00")
    _shot(lib / "b.jpg", 2, "2024:05:01 10:00:03")
    _shot(lib / "c.jpg", 3, "2024:05:01 11:30:00")
    sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    # the tiny random model's similarities say little: no ITC floor for bursts, near-duplicates only if equal
    settings.duplicate_burst_similarity, settings.duplicate_near_similarity = 0.0, 1.0
    out = svc.duplicates(settings, "lib")
    assert "burst" not in out["skipped"]
    bursts = [g for g in out["groups"] if g["tier"] == "burst"]
    assert len(bursts) == 1
    assert sorted(m["uri"].rsplit("/", 1)[1] for m in bursts[0]["members"]) == ["a.jpg", "b.jpg"]
    assert bursts[0]["scores"]["max_seconds_apart"] == 3.0
