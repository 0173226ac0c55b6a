"""The Ray runner on a local Ray instance: its records equal the local runner's."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import write_bad_files, write_images

ray = pytest.importorskip("ray", reason="the Ray runner needs the 'ray' extra")

COMPARED = ("id", "uri", "sha256", "width", "height", "format", "bytes", "metadata", "model_id")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_runner_records_equal_the_local_runner(settings, blip_embedder, tiny_models, tmp_path, local_ray):
    from indexer.options import IndexOptions

    images = write_images(tmp_path / "in", 14)
    bad = write_bad_files(tmp_path / "in" / "bad")
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for i, p in enumerate([*images, *bad.values()]):
            w.writerow([str(p), f"l{i % 3}"])
    s = settings.model_copy(update={"shard_size": 6, "decode_mode": "thread"})
    local = index_paths(s, [tmp_path / "m.csv"], "local", embedder=blip_embedder, progress=False)
    s_ray = s.model_copy(update={"model": str(tiny_models["blip-itm"])})
    on_ray = IndexOptions.from_settings(s_ray, runner="ray")
    remote = index_paths(s_ray, [tmp_path / "m.csv"], "ray", options=on_ray, progress=False)

    assert (remote.added, remote.failed, remote.skipped_duplicates) == (local.added, local.failed, 0) == (14, 5, 0)
    assert sorted((f["path"], f["reason"]) for f in remote.failures) == sorted(
        (f["path"], f["reason"]) for f in local.failures
    )
    a = Collection.open(s.data_dir, "local").read_table().to_pylist()
    b = Collection.open(s.data_dir, "ray").read_table().to_pylist()
    assert [{k: r[k] for k in COMPARED} for r in a] == [{k: r[k] for k in COMPARED} for r in b]
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(ra["embedding"]), np.asarray(rb["embedding"]), atol=1e-5)
    assert json.loads(b[0]["metadata"]) == {"label": "l0"}
    assert Collection.open(s.data_dir, "ray").manifest.next_id == 14  # ids 0..13, none skipped or reused

    # Re-running is idempotent, and the collection has its index.
    again = index_paths(s_ray, [tmp_path / "m.csv"], "ray", options=on_ray, progress=False)
    assert (again.added, again.skipped_duplicates) == (0, 14)
    coll = Collection.open(s.data_dir, "ray")
    assert coll.manifest.index is not None and coll.manifest.index.ntotal == 14
