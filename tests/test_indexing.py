"""Indexing: bad files are reported and skipped, re-runs are idempotent, writers never duplicate."""

from __future__ import annotations

import shutil
import threading

import numpy as np
from PIL import Image

from media.decode import decode_image
from service.indexing import index_paths
from storage.catalog import Catalog
from storage.collection import Collection
from tests.helpers import make_image, write_bad_files, write_images


def test_bad_files_are_reported_and_rerun_adds_nothing(settings, blip_embedder, tmp_path):
    good = write_images(tmp_path / "in", 12)
    bad = write_bad_files(tmp_path / "in" / "bad")
    first = index_paths(settings, [tmp_path / "in"], "c", embedder=blip_embedder, progress=False)
    assert first.added == 12 and first.failed == len(bad)
    reasons = {f["path"]: f["error"] for f in first.failures}
    assert set(reasons) == {str(p.resolve()) for p in bad.values()}
    assert "empty" in reasons[str(bad["empty"].resolve())]
    assert "truncated" in reasons[str(bad["truncated"].resolve())]
    assert "pixel" in reasons[str(bad["huge"].resolve())]
    assert "not a recognised image" in reasons[str(bad["text"].resolve())]
    second = index_paths(settings, [tmp_path / "in"], "c", embedder=blip_embedder, progress=False)
    assert second.added == 0 and second.skipped_duplicates == 12 and second.failed == len(bad)
    assert Collection.open(settings.data_dir, "c").manifest.count == len(good)
    # The job and its failures are in the catalog.
    jobs = Catalog(settings.catalog_url()).list_jobs("c")
    assert len(jobs) == 2 and all(j.state == "succeeded" for j in jobs)
    assert jobs[-1].counts["added"] == 12 and len(jobs[-1].failures) == len(bad)


def test_identical_content_is_one_record(settings, blip_embedder, tmp_path):
    paths = write_images(tmp_path / "in", 3)
    shutil.copy(paths[0], tmp_path / "in" / "copy_of_0.jpg")
    report = index_paths(settings, [tmp_path / "in"], "c", embedder=blip_embedder, progress=False)
    assert report.added == 3 and report.skipped_duplicates == 1
    table = Collection.open(settings.data_dir, "c").read_table(["sha256"])
    assert len(set(table.column("sha256").to_pylist())) == 3


def test_decode_applies_exif_orientation_and_rgb(tmp_path):
    import io

    img = make_image(3, (80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    decoded = decode_image(buf.getvalue(), 10**8)
    assert (decoded.width, decoded.height) == (40, 80) and decoded.image.mode == "RGB"
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    out = decode_image(buf.getvalue(), 10**8).image
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)  # transparent → white


def test_concurrent_writers_never_duplicate(settings, blip_embedder, tmp_path):
    write_images(tmp_path / "in", 30)
    reports = []
    errors = []

    def run() -> None:
        try:
            reports.append(index_paths(settings, [tmp_path / "in"], "c", embedder=blip_embedder, progress=False))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    Collection.create(settings.data_dir, "c", model=blip_embedder.describe())
    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    coll = Collection.open(settings.data_dir, "c")
    shas = coll.read_table(["sha256"]).column("sha256").to_pylist()
    assert len(shas) == 30 and len(set(shas)) == 30
    assert sum(r.added for r in reports) == 30
    ids, _ = coll.all_embeddings()
    assert sorted(ids.tolist()) == list(range(30))


def test_records_hold_metadata(settings, blip_embedder, tmp_path):
    p = tmp_path / "in" / "one.png"
    p.parent.mkdir()
    make_image(1, (123, 45)).save(p)
    index_paths(settings, [p], "c", embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "c")
    rec = coll.get_records([0])[0]
    assert rec["uri"] == str(p.resolve()) and (rec["width"], rec["height"]) == (123, 45)
    assert rec["format"] == "PNG" and rec["bytes"] == p.stat().st_size and rec["caption"] is None
    import hashlib

    assert rec["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    t = coll.read_table()
    assert t.schema.field("embedding").type.list_size == 256
    assert t.column("model_id").to_pylist() == [blip_embedder.model_id]
    assert np.isclose(np.linalg.norm(coll.all_embeddings()[1][0]), 1.0, atol=1e-5)
