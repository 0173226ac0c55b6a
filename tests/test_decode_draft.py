"""JPEG draft decoding (DCT-domain downscaling) against the full decode: the checkpoint's own
image processor output must agree within tolerance, and records keep the original size."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from media.decode import decode_image
from tests.helpers import make_image


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("size", [(1600, 1200), (3000, 2000), (1024, 768), (4000, 3000)])
def test_draft_matches_full_decode_at_384(size):
    from transformers import BlipImageProcessor  # the blip-itm-base-coco preprocessing (384 px)

    proc = BlipImageProcessor(size={"height": 384, "width": 384})
    data = _jpeg(make_image(7, size))
    full = decode_image(data, 10**9)
    fast = decode_image(data, 10**9, draft=384)
    assert (fast.width, fast.height) == (full.width, full.height) == size
    assert fast.image.size != full.image.size and min(fast.image.size) >= 384  # really drafted, never below
    a = proc(full.image, return_tensors="np")["pixel_values"]
    b = proc(fast.image, return_tensors="np")["pixel_values"]
    diff = np.abs(a - b)
    # Normalised units (pixel / 255 - mean) / std with std ~0.27: 0.02 mean is ~1.4/255 per pixel.
    assert diff.mean() < 0.02 and np.percentile(diff, 99) < 0.15


def test_draft_is_skipped_when_it_would_not_help(blip_embedder):
    small = _jpeg(make_image(3, (700, 500)))  # under twice the input size: decoded in full
    assert decode_image(small, 10**9, draft=384).image.size == (700, 500)
    png = io.BytesIO()
    make_image(3, (2000, 1500)).save(png, "PNG")
    assert decode_image(png.getvalue(), 10**9, draft=384).image.size == (2000, 1500)  # not a JPEG
    # End to end with the tiny model: the embedding of a drafted decode stays the same image's.
    data = _jpeg(make_image(5, (1600, 1200)))
    side = blip_embedder.input_size
    assert side == 32
    e_full = blip_embedder.embed_images([decode_image(data, 10**9).image])[0]
    e_fast = blip_embedder.embed_images([decode_image(data, 10**9, draft=side).image])[0]
    assert float(e_full @ e_fast) > 0.999


def test_indexing_with_draft_stays_within_tolerance_of_the_full_decode(settings, blip_embedder, tmp_path):
    from service.indexing import index_paths
    from storage.collection import Collection

    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i}.jpg").write_bytes(_jpeg(make_image(i, (1600, 1200))))
    exact = settings.model_copy(update={"data_dir": tmp_path / "exact", "jpeg_draft": False})
    # JPEG drafts are part of the fast mode only (the embedder itself stays exact here).
    # (PDQ hashing needs the full decode: drafts apply with it off)
    drafted = settings.model_copy(
        update={"data_dir": tmp_path / "draft", "jpeg_draft": True, "precision": "fast", "pdq_hashes": False}
    )
    for s in (exact, drafted):
        index_paths(s, [folder], "c", embedder=blip_embedder, progress=False)
    t_exact = Collection.open(exact.data_dir, "c").read_table(["uri", "width", "height"]).to_pylist()
    t_draft = Collection.open(drafted.data_dir, "c").read_table(["uri", "width", "height"]).to_pylist()
    assert t_exact == t_draft  # same records, original sizes kept
    _, e_exact = Collection.open(exact.data_dir, "c").all_embeddings()
    _, e_draft = Collection.open(drafted.data_dir, "c").all_embeddings()
    cos = (e_exact * e_draft).sum(axis=1)
    assert cos.min() > 0.999
    assert not np.allclose(e_exact, e_draft, atol=1e-6)  # the draft path really ran
