"""No absolute server paths in API answers (unless BLIPSEARCH_EXPOSE_PATHS),
a minimal /readyz in key mode, jobs of dead processes marked ``interrupted``, and
BLIPSEARCH_MAX_IMAGE_PIXELS above Pillow's own limit taking effect."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.uploads import sniff_and_decode
from blipsearch.config import Settings
from media.decode import decode_image
from service.indexing import index_paths
from storage import owners
from storage.api_keys import create_key
from storage.catalog import JobOwnerRow, open_catalog
from storage.job_run import RESUMABLE
from tests.helpers import write_images


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("paths")
    write_images(root / "imports" / "batch", 4)
    write_images(root / "elsewhere", 4, start=50)
    return root, str(tiny_models["blip-itm"])


def _settings(root, model, **kw) -> Settings:
    return Settings(data_dir=root / "data", model=model, batch_size=4, import_roots=[root / "imports"], **kw)


def test_api_answers_carry_no_absolute_server_paths(indexed):
    root, model = indexed
    settings = _settings(root, model)
    index_paths(settings, [root / "imports" / "batch"], "inroot", progress=False)
    index_paths(settings, [root / "elsewhere"], "outside", progress=False)
    key = create_key(open_catalog(settings.catalog_url()), "w", "write")[0]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        texts = []
        for coll, expect_prefix in (("inroot", "batch/"), ("outside", "img_")):
            r = client.post("/v1/search/text", json={"query": "x", "collection": coll, "k": 4})
            uris = [x["uri"] for x in r.json()["results"]]
            assert len(uris) == 4 and all(u.startswith(expect_prefix) for u in uris), uris
            rec = client.get(f"/v1/collections/{coll}/images/0").json()
            assert rec["uri"].startswith(expect_prefix)
            texts += [r.text, str(rec)]
        texts.append(client.get("/v1/collections/nope").text)
        texts.append(client.get("/v1/collections/inroot/images/99").text)
        forbidden = client.post(
            "/v1/jobs/index",
            json={"collection": "j", "paths": [str(root / "elsewhere")]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert forbidden.status_code == 403
        texts.append(forbidden.text.replace(str(root / "elsewhere"), ""))  # the client's own input may be echoed
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["detail"]["collections"]
        texts.append(ready.text)
        for text in texts:
            assert str(root) not in text and model not in text, text
    exposed = _settings(root, model, expose_paths=True)
    with TestClient(create_app(exposed), raise_server_exceptions=False) as client:
        r = client.post("/v1/search/text", json={"query": "x", "collection": "outside", "k": 4})
        assert all(x["uri"].startswith(str((root / "elsewhere").resolve())) for x in r.json()["results"])


def test_readyz_is_minimal_in_key_mode(indexed):
    root, model = indexed
    settings = _settings(root, model, read_access="key")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.post("/v1/search/text", json={"query": "x", "collection": "inroot"})  # 401, loads nothing
        r = client.get("/readyz")
        assert r.status_code == 200 and r.json() == {"status": "ready", "detail": {}}


# -- dead job owners ----------------------------------------------------------------------

OWNER = """
import sys, time
from storage.catalog import open_catalog
cat = open_catalog(sys.argv[1])
print(cat.create_job("index", "c", None, {}), flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_a_job_whose_process_was_killed_becomes_interrupted(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    proc = subprocess.Popen([sys.executable, "-c", OWNER, url], stdout=subprocess.PIPE, text=True, env=env)
    try:
        job_id = proc.stdout.readline().strip()
        catalog = open_catalog(url)
        assert catalog.get_job(job_id).state == "running"  # its owner is alive
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    job = catalog.get_job(job_id)
    assert job.state == "interrupted" and "pid" in (job.error or "")
    assert job.finished_at is not None and "interrupted" in RESUMABLE
    assert [j.state for j in catalog.list_jobs("c")] == ["interrupted"]


def test_live_owner_stays_running_and_a_reused_pid_does_not_pass(tmp_path):
    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    mine = catalog.create_job("index", "c", None, {})
    assert catalog.get_job(mine).state == "running"
    other = catalog.create_job("index", "c", None, {})
    me = owners.current()
    with catalog.session() as s:  # same pid, but another process start: the pid was reused
        s.get(JobOwnerRow, other).started = me.started + "-earlier" if me.started else "x"
    if me.started:
        assert catalog.get_job(other).state == "interrupted"
    remote = catalog.create_job("index", "c", None, {})
    with catalog.session() as s:  # owned on another host: cannot be checked, left alone
        s.get(JobOwnerRow, remote).host = "some-other-host"
        s.get(JobOwnerRow, remote).pid = 1 << 22
    assert catalog.get_job(remote).state == "running"
    gone = catalog.create_job("index", "c", None, {})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    time.sleep(0.05)
    with catalog.session() as s:
        s.get(JobOwnerRow, gone).pid = dead.pid
    assert catalog.get_job(gone).state == "interrupted"
    assert catalog.get_job(mine).state == "running"


# -- Pillow's own pixel limit ---------------------------------------------------------------


def test_max_image_pixels_above_pillows_limit_takes_effect(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow refuses over 2x this on open
    buf = io.BytesIO()
    Image.new("RGB", (100, 100), (200, 10, 10)).save(buf, "PNG")  # 10,000 px
    data = buf.getvalue()
    decoded = decode_image(data, max_pixels=50_000)
    assert (decoded.width, decoded.height) == (100, 100)
    assert sniff_and_decode(data, "x.png", "image/png", 50_000).width == 100
    from blipsearch.errors import ImageDecodeError

    with pytest.raises(ImageDecodeError) as err:  # our own limit still holds below it
        decode_image(data, max_pixels=5_000)
    assert err.value.reason == "too_many_pixels"


@pytest.mark.parametrize("pillow_limit", [None, 10**10])
def test_request_pixel_budget_does_not_depend_on_pillows_process_wide_limit(monkeypatch, pillow_limit):
    """An image over the per-image limit is refused by its own decode (422), whatever Pillow's
    process-wide MAX_IMAGE_PIXELS another decode raised it to; images within the per-image limit
    count toward the request budget (413)."""
    import io

    from PIL import Image

    from api.decoding import check_request_pixels
    from blipsearch.errors import PayloadTooLargeError

    if pillow_limit is not None:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, "PNG")
    huge = buf.getvalue()
    check_request_pixels([huge], budget=50_000_000, per_image=100_000_000)  # left to the decode: no 413
    buf = io.BytesIO()
    Image.new("1", (6_000, 6_000)).save(buf, "PNG")
    within = buf.getvalue()  # 36 Mpx each: two exceed a 50 Mpx request budget
    with pytest.raises(PayloadTooLargeError):
        check_request_pixels([within, within], budget=50_000_000, per_image=100_000_000)
