"""HEIC/HEIF, AVIF and camera RAW through the one safe decode: real files written by the
formats' own libraries (pillow-heif, Pillow's AVIF codec, PiDNG), multi-frame files, corrupt
files as per-file failures, the pixel budget from the container header, the install message of
a missing decoder, and the original and thumbnail served for every format."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from blipsearch.config import Settings
from blipsearch.errors import ImageDecodeError
from media.decode import decode_image
from media.exif import read_capture
from service.indexing import index_paths
from storage.collection import Collection
from tests.photo_library import Shot, dng_bytes, dng_with_preview, photo_bytes


def _frames(fmt: str) -> bytes:
    red, blue = Image.new("RGB", (40, 30), (220, 20, 20)), Image.new("RGB", (40, 30), (20, 20, 220))
    buf = io.BytesIO()
    red.save(buf, fmt, save_all=True, append_images=[blue], **({"duration": 100} if fmt != "TIFF" else {}))
    return buf.getvalue()


def test_heic_avif_dng_decode_upright_rgb_with_original_size():
    heic = photo_bytes(Shot("h", fmt="HEIF", seed=1))
    d = decode_image(heic, 10**7)
    assert (d.format, d.width, d.height, d.image.mode, d.image.size) == ("HEIF", 72, 56, "RGB", (72, 56))
    avif = photo_bytes(Shot("a", fmt="AVIF", seed=2))
    d = decode_image(avif, 10**7)
    assert (d.format, d.width, d.height, d.image.mode) == ("AVIF", 72, 56, "RGB")
    # the pixels are the picture that was encoded (lossy: a tolerance), not a blank frame
    ref = np.asarray(Image.open(io.BytesIO(photo_bytes(Shot("p", fmt="PNG", seed=2)))).convert("RGB"), np.float32)
    assert np.abs(np.asarray(d.image, np.float32) - ref).mean() < 12
    dng = photo_bytes(Shot("d", fmt="DNG", make="Canon", model="EOS R5", seed=3))
    full = decode_image(dng, 10**7)  # no model side given: the sensor is smaller than a preview would need
    assert (full.format, full.width, full.height, full.image.size, full.image.mode) == ("DNG", 96, 64, (96, 64), "RGB")
    half = decode_image(dng, 10**7, draft=16)  # half the sensor still covers the model's side: half-size demosaic
    assert (half.width, half.height, half.image.size) == (96, 64, (48, 32))


def test_raw_embeds_the_preview_when_large_enough_else_demosaics():
    preview = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    dng = dng_with_preview(preview)
    d = decode_image(dng, 10**7, draft=224)  # the model's side is covered by the camera's preview
    assert (d.format, d.width, d.height) == ("DNG", 640, 480)
    assert np.array_equal(np.asarray(d.image), preview)
    full = decode_image(dng, 10**7, draft=300)  # the preview is too small: the sensor data is demosaiced
    assert (full.width, full.height, full.image.size) == (640, 480, (640, 480))
    assert not np.array_equal(np.asarray(full.image.resize((320, 240))), preview)
    meta = read_capture(dng)
    assert (meta["camera_make"], meta["camera_model"]) == ("Canon", "Canon R")


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "TIFF"])
def test_multi_frame_files_decode_their_first_frame(fmt):
    d = decode_image(_frames(fmt), 10**7)
    r, g, b = np.asarray(d.image, np.float32).reshape(-1, 3).mean(0)
    assert r > 150 and b < 80, (fmt, r, g, b)


def test_corrupt_heic_and_raw_fail_with_a_reason_and_budget_comes_from_the_header():
    heic = photo_bytes(Shot("h", fmt="HEIF", seed=4))
    dng = photo_bytes(Shot("d", fmt="DNG", seed=5))
    for bad in (heic[: len(heic) // 2], heic[:40] + b"\x00" * 400, dng[:2000]):
        with pytest.raises(ImageDecodeError) as exc:
            decode_image(bad, 10**7)
        assert exc.value.reason == "corrupt" and "corrupt" in str(exc.value)
    for data, pixels in ((heic, 72 * 56), (dng, 96 * 64)):
        with pytest.raises(ImageDecodeError) as exc:
            decode_image(data, pixels - 1)
        assert exc.value.reason == "too_many_pixels"
        assert decode_image(data, pixels).width > 0


def test_missing_decoder_is_a_per_file_failure_with_the_install_line(monkeypatch):
    import media.formats.heif as heif

    dng = photo_bytes(Shot("d", fmt="DNG", seed=6))
    heic = photo_bytes(Shot("h", fmt="HEIF", seed=7))
    monkeypatch.setitem(sys.modules, "rawpy", None)  # `import rawpy` raises ImportError, as when not installed
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(dng, 10**7)
    assert exc.value.reason == "missing_decoder" and "blipsearch[raw]" in str(exc.value)
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    monkeypatch.setattr(heif, "_registered", False)
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(heic, 10**7)
    assert exc.value.reason == "missing_decoder" and "blipsearch[heif]" in str(exc.value)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("formats")
    imgs = root / "imgs"
    imgs.mkdir()
    files = {
        "phone.heic": photo_bytes(Shot("h", fmt="HEIF", seed=8)),
        "cam.dng": photo_bytes(Shot("d", fmt="DNG", seed=9)),
        "web.avif": photo_bytes(Shot("a", fmt="AVIF", seed=10)),
        "anim.gif": _frames("GIF"),
        "broken.heic": photo_bytes(Shot("b", fmt="HEIF", seed=11))[:300],
        "broken.dng": photo_bytes(Shot("c", fmt="DNG", seed=12))[:2000],
    }
    for name, data in files.items():
        (imgs / name).write_bytes(data)
    settings = Settings(data_dir=root / "data", model=str(tiny_models["blip-itm"]), batch_size=4)
    report = index_paths(settings, [imgs], "c", progress=False)
    recs = Collection.open(settings.data_dir, "c").get_records(list(range(10)))
    ids = {r["uri"].rsplit("/", 1)[-1]: rid for rid, r in recs.items()}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, ids, report, files


def test_every_readable_file_is_indexed_and_corrupt_ones_fail_with_reasons(served):
    _, ids, report, _ = served
    assert set(ids) == {"phone.heic", "cam.dng", "web.avif", "anim.gif"}
    failed = {f["path"].rsplit("/", 1)[-1]: f for f in report.failures}
    assert set(failed) == {"broken.heic", "broken.dng"}
    assert all("corrupt" in f["error"] for f in failed.values())


@pytest.mark.parametrize(
    ("name", "media_type"),
    [("phone.heic", "image/heic"), ("cam.dng", "image/x-adobe-dng"), ("web.avif", "image/avif")],
)
def test_file_serves_the_original_with_its_type_and_thumbnails_work(served, name, media_type):
    client, ids, _, files = served
    r = client.get(f"/v1/collections/c/images/{ids[name]}/file")
    assert r.status_code == 200 and r.headers["content-type"] == media_type
    assert r.content == files[name]
    ext = {"phone.heic": "heic", "cam.dng": "dng", "web.avif": "avif"}[name]
    assert r.headers["content-disposition"].endswith(f'.{ext}"')
    t = client.get(f"/v1/collections/c/images/{ids[name]}/thumbnail")
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(t.content))
    assert thumb.format == "JPEG" and max(thumb.size) <= 256 and min(thumb.size) > 0


def test_heic_and_dng_uploads_are_indexed(served):
    from storage.api_keys import create_key
    from storage.catalog import open_catalog

    client, _, _, files = served  # the last test of this module: from here on, requests need a key
    key = create_key(open_catalog(client.app.state.blip.settings.catalog_url()), "photos", "write")[0]
    h = {"Authorization": f"Bearer {key}"}
    assert client.post("/v1/collections", json={"name": "up"}, headers=h).status_code == 201
    up = [
        ("files", ("IMG_0001.HEIC", files["phone.heic"], "image/heic")),
        ("files", ("cam.dng", files["cam.dng"], "image/x-adobe-dng")),
        ("files", ("lie.jpg", files["phone.heic"][:-1] + b"\x01", "image/jpeg")),  # says JPEG, is HEIC
    ]
    r = client.post("/v1/collections/up/images", files=up, headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [a["filename"] for a in out["added"]] == ["IMG_0001.HEIC", "cam.dng"]
    assert [f["filename"] for f in out["failures"]] == ["lie.jpg"]
    rid = out["added"][0]["id"]
    assert client.get(f"/v1/collections/up/images/{rid}", headers=h).json()["format"] == "HEIF"


def _no_preprocess(images):  # module level: the decode worker processes unpickle it
    return np.zeros((len(images), 1), np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_decode_past_its_time_limit_is_a_per_file_failure(mode):
    """A RAW that needs a full demosaic (a thin 8000x1000 DNG: half size would not cover the
    model's side) takes ~0.5 s; with a 0.1 s limit it fails with ``decode_timeout`` and the
    stage goes on decoding other files (a worker process is ended and replaced)."""
    from indexer.decode_pool import DecodeConfig, DecodeStage

    slow = dng_bytes(Shot("slow", fmt="DNG", seed=3), 8000, 1000)
    small = photo_bytes(Shot("small", seed=4))
    stage = DecodeStage(DecodeConfig(_no_preprocess, None, 10**8, None, timeout_s=0.1), mode=mode, processes=1)
    try:
        with pytest.raises(ImageDecodeError, match="time limit") as exc:
            stage(slow)
        assert exc.value.reason == "decode_timeout"
        assert stage(small).meta["format"] == "JPEG"  # the next file decodes
    finally:
        stage.close()
    roomy = DecodeStage(DecodeConfig(_no_preprocess, None, 10**8, None, timeout_s=60.0), mode="thread")
    assert roomy(slow).meta["width"] == 8000  # the same file within a larger limit: the limit was the cause
    if mode == "thread":  # the stored originals' decode (thumbnails, /file) has the same limit
        from media.stored import ImageLimits, StoredImages

        with pytest.raises(ImageDecodeError, match="time limit"):
            StoredImages({}, ImageLimits(timeout_s=0.1)).decode(slow)
        assert StoredImages({}, ImageLimits()).decode(slow).width == 8000


@pytest.mark.slow
def test_an_upload_past_the_decode_time_limit_is_refused_not_hung(served, tmp_path):
    """Uploads decode under the same limit as indexing: a search-by-image with a DNG that needs
    a full demosaic (~0.5 s) against a 0.1 s limit answers a 4xx naming the limit; the same
    request under the default limit answers 200."""
    from api.uploads import sniff_and_decode

    slow = dng_bytes(Shot("slow", fmt="DNG", seed=3), 8000, 1000)
    with pytest.raises(ImageDecodeError, match="time limit"):
        sniff_and_decode(slow, "slow.dng", "image/x-adobe-dng", 10**8, None, 0.1)
    from indexer.decode_pool import DecodeConfig, decode_bounded  # Ray actors' and import checks' decode

    with pytest.raises(ImageDecodeError, match="time limit"):
        decode_bounded(DecodeConfig(_no_preprocess, None, 10**8, None, timeout_s=0.1), slow)
    client, _, _, _ = served
    base = client.app.state.blip.settings
    tight = base.model_copy(update={"decode_timeout_s": 0.1})
    files = {"file": ("slow.dng", slow, "image/x-adobe-dng")}
    with TestClient(create_app(tight), raise_server_exceptions=False) as c:
        r = c.post("/v1/search/image", data={"collection": "c", "k": "2"}, files=files)
        assert 400 <= r.status_code < 500, r.text
        assert "time limit" in r.text
    ok = client.post("/v1/search/image", data={"collection": "c", "k": "2"}, files=files)
    assert ok.status_code == 200, ok.text
