"""A real browser (Debian's headless Chromium, driven by Playwright) uses the page end to end."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from blipsearch.config import Settings
from indexer.job import index_paths
from tests.helpers import write_images

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian chromium not installed (scripts/test.sh installs it)"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path, blip_embedder):
    import uvicorn

    from api.app import create_app

    settings = Settings(data_dir=tmp_path / "data", batch_size=8)
    write_images(tmp_path / "imgs", 16)
    index_paths(settings, [tmp_path / "imgs"], "photos", embedder=blip_embedder, progress=False)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", tmp_path / "imgs"
    srv.should_exit = True
    thread.join(timeout=10)


def test_page_text_query_image_query_and_more_like_this(server):
    playwright = pytest.importorskip("playwright.sync_api")
    url, images = server
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-sync",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        # The page runs under its Content-Security-Policy (no eval), so the waits below are
        # functions, which Playwright calls without evaluating a string in the page.
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url + "/")
        page.wait_for_selector("#collection option[value=photos]", state="attached")
        # Keyboard only: type a query and press Enter.
        page.get_by_label("Describe what you are looking for").fill("a red square")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelectorAll('#results img').length >= 12")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        assert "results in" in page.locator("#status").inner_text()
        page.screenshot(path=str(ARTIFACTS / "page-text-query.png"), full_page=True)

        # Upload a query image: its own file must come back first.
        query = images / "img_00003.jpg"
        page.set_input_files("#image-file", str(query))
        page.wait_for_function(
            "() => document.querySelector('#results li img') && "
            "document.querySelector('#status').textContent.includes('results in')"
        )
        first_alt = page.locator("#results li").first.locator("img")
        first_alt.wait_for()
        page.locator("#results li button").first.click()
        page.wait_for_selector("dialog[open]")
        fields = page.locator("#detail-fields").inner_text()
        # The record's uri is shown without the server's absolute path (issue #14).
        assert fields.find(query.name) >= 0 and str(query) not in fields
        page.screenshot(path=str(ARTIFACTS / "page-detail.png"))
        page.get_by_role("button", name="More like this").click()
        page.wait_for_function("() => !document.querySelector('dialog').open")
        page.wait_for_function("() => document.querySelectorAll('#results img').length >= 12")
        page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "page.png").stat().st_size > 10_000
