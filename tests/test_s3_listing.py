"""Listing a prefix full of empty "folders" against a real S3 API on loopback (moto's server):
the markers are dropped page by page, so memory does not grow with them, and a listing is
bounded in entries (refused in one line past the limit) instead of running without end.

The markers are put straight into the server's store (moto's backend, in this process) because
tens of thousands of PUTs over HTTP would take minutes; every listing goes over HTTP as usual.
"""

from __future__ import annotations

import io
import time
import tracemalloc

import pytest

from blipsearch.errors import InvalidInputError
from indexer.sources import tree as tree_mod
from indexer.sources.tree import Tree
from media.objects import ObjectOptions
from service.indexing import index_paths
from storage.collection import Collection
from tests.helpers import make_image
from tests.s3server import S3, SECRET

pytestmark = pytest.mark.timeout(300)


def _seed_markers(bucket: str, prefix: str, n: int) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for i in range(n):
        backend.put_object(bucket, f"{prefix}{i:06d}/", b"")


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    make_image(i, (40, 30)).save(buf, "JPEG")
    return buf.getvalue()


def _peak_listing(tree: Tree, base: str) -> tuple[dict[str, int], int]:
    tracemalloc.start()
    try:
        files = tree.files(base)
        peak = tracemalloc.get_traced_memory()[1]
        print(f"listing {base}: peak {peak / 2**20:.1f} MiB")
        return files, peak
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_empty_folders_are_listed_in_bounded_memory_and_entries(s3: S3, settings, blip_embedder, monkeypatch):
    bucket = s3.bucket(f"folders-{time.monotonic_ns() % 10**8}")
    for i in range(3):
        s3.put(bucket, f"few/img{i}.jpg", _jpeg(300 + i))
        s3.put(bucket, f"many/img{i}.jpg", _jpeg(300 + i))
    _seed_markers(bucket, "few/empty/", 1_000)
    _seed_markers(bucket, "many/empty/", 8_000)
    tree = Tree.open(f"s3://{bucket}", ObjectOptions.from_env())
    for warm in ("many", "few"):  # the client's and the server's first calls allocate what later ones reuse
        tree.files(f"{bucket}/{warm}")

    few, few_peak = _peak_listing(tree, f"{bucket}/few")
    many, many_peak = _peak_listing(tree, f"{bucket}/many")
    assert sorted(few) == [f"{bucket}/few/img{i}.jpg" for i in range(3)]
    assert sorted(many) == [f"{bucket}/many/img{i}.jpg" for i in range(3)]
    # 8x the markers, the same peak: a page at a time (~10 MiB at both counts here; tracemalloc
    # also sees the in-process server's allocations). s3fs's find, which keeps every entry and
    # implied folder, grows with the markers: ~2 MiB at 1,000, ~12 MiB at 8,000.
    assert many_peak < 2 * (few_peak + (2 << 20)), (few_peak, many_peak)

    # Past the entry limit the listing stops after that many entries, in one line, no secret.
    monkeypatch.setattr(tree_mod, "MAX_LISTED", 2_500)
    t0 = time.monotonic()
    with pytest.raises(InvalidInputError, match=r"over 2,500 entries") as err:
        index_paths(settings, [f"s3://{bucket}/many"], "capped", embedder=blip_embedder, progress=False)
    assert "\n" not in str(err.value) and SECRET not in str(err.value)
    capped_s = time.monotonic() - t0
    monkeypatch.setattr(tree_mod, "MAX_LISTED", 10_000_000)

    # Under the limit the images among the markers are indexed, each once.
    t0 = time.monotonic()
    report = index_paths(settings, [f"s3://{bucket}/many"], "folders", embedder=blip_embedder, progress=False)
    full_s = time.monotonic() - t0
    assert (report.added, report.failed) == (3, 0), report.failures
    uris = sorted(r["uri"] for r in Collection.open(settings.data_dir, "folders").read_table(["uri"]).to_pylist())
    assert uris == [f"s3://{bucket}/many/img{i}.jpg" for i in range(3)]
    assert capped_s < full_s  # the capped listing read 3 of the 9 pages, then stopped
