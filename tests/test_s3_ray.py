"""The Ray executor over an s3:// prefix (a real S3 API on loopback): its workers read the objects
through their own credential chain, and the records equal the local executor's.

Its cost is Ray's start (a local instance: ~8 s) and each actor process importing torch and
loading the model (~10 s each on a busy 2-core machine), not the objects: so the input is a
handful of objects, and Ray gets 2 CPUs with one read/decode actor and one model actor, which
is exactly what those 2 CPUs hold (more decode actors than CPUs left the model actor waiting
for one to be released, serialising the stages).
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import make_image
from tests.s3server import S3

ray = pytest.importorskip("ray", reason="the Ray runner needs the 'ray' extra")
pytestmark = pytest.mark.timeout(300)  # ~1 min at load 8 on 2 cores (Ray start + two actor starts)
COMPARED = ("id", "uri", "sha256", "width", "height", "format", "bytes", "metadata", "model_id")


@pytest.mark.slow
def test_the_ray_executor_reads_the_same_objects_as_the_local_one(s3: S3, settings, blip_embedder, tiny_models):
    from indexer.options import IndexOptions

    bucket = s3.bucket(f"ray-{time.monotonic_ns() % 10**8}")
    for i in range(5):
        buf = io.BytesIO()
        make_image(800 + i, (40, 30)).save(buf, "JPEG")
        s3.put(bucket, f"r/{i}.jpg", buf.getvalue())
    s3.put(bucket, "r/not-an-image.jpg", b"plain text")
    source = f"s3://{bucket}/r"
    s = settings.model_copy(update={"shard_size": 4, "decode_mode": "thread", "s3_endpoint_url": s3.endpoint})
    local = index_paths(s, [source], "local", embedder=blip_embedder, progress=False)
    # One decode actor (decode_workers=1) and one model actor: each reserves one of Ray's 2 CPUs.
    s_ray = s.model_copy(update={"model": str(tiny_models["blip-itm"]), "decode_workers": 1})
    # Ray's workers start from this process's environment: the endpoint and credentials the fixture set.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = index_paths(
            s_ray, [source], "ray", options=IndexOptions.from_settings(s_ray, runner="ray"), progress=False
        )
    finally:
        ray.shutdown()
    assert (remote.added, remote.failed) == (local.added, local.failed) == (5, 1)
    assert [(f["path"], f["reason"]) for f in remote.failures] == [(f["path"], f["reason"]) for f in local.failures]
    a = Collection.open(s.data_dir, "local").read_table().to_pylist()
    b = Collection.open(s.data_dir, "ray").read_table().to_pylist()
    assert [{k: r[k] for k in COMPARED} for r in a] == [{k: r[k] for k in COMPARED} for r in b]
    assert {r["uri"] for r in b} == {f"{source}/{i}.jpg" for i in range(5)}
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(ra["embedding"]), np.asarray(rb["embedding"]), atol=1e-5)
