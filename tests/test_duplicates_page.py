"""The page's duplicates screen in a real browser: groups with their tier and reasons; Stack."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from blipsearch.config import Settings
from service.syncing import sync_paths
from storage.api_keys import create_key
from storage.catalog import open_catalog
from tests.helpers import make_image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed"),
]


def test_duplicates_screen_shows_groups_and_stacks_one(tmp_path, blip_embedder, tiny_models):
    playwright = pytest.importorskip("playwright.sync_api")
    import uvicorn

    from api.app import create_app

    lib = tmp_path / "lib"
    lib.mkdir()
    big = make_image(0, (320, 240))
    big.save(lib / "a_large.jpg", quality=95)
    big.resize((160, 120)).save(lib / "a_small.png")
    make_image(3, (160, 120)).save(lib / "b.png")
    # the tiny random model's similarities say little: PDQ decides the re-encoded tier here
    settings = Settings(
        data_dir=tmp_path / "data",
        model=str(tiny_models["blip-itm"]),
        duplicate_reencoded_similarity=0.5,
        duplicate_near_similarity=1.0,
    )
    sync_paths(settings, [lib], "lib", embedder=blip_embedder)
    key = create_key(open_catalog(settings.catalog_url()), "page", "write")[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with playwright.sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
            page = b.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"http://127.0.0.1:{port}/?view=duplicates&c=lib")
            page.evaluate(f"() => sessionStorage.setItem('blipsearch.key', '{key}')")
            card = page.locator(".dup-card", has_text="reencoded")
            card.wait_for(timeout=30_000)
            assert "PDQ distance" in card.inner_text() and "keeper" in card.inner_text()
            card.get_by_role("button", name="Stack group").click()
            page.locator(".dup-card", has_text="stacked").wait_for(timeout=30_000)
            assert not errors, errors
            b.close()
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
