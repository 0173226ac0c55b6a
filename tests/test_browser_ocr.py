"""The page shows text read from images: the matched OCR line under a keyword result, and the
matching line's box drawn over the image in the detail view, where the text is (real Chromium)."""

from __future__ import annotations

import threading
import time

import pytest

from blipsearch.config import Settings
from service.indexing import index_paths
from tests.test_browser import ARTIFACTS, CSP, _free_port, _status, browser, page  # noqa: F401

pytest.importorskip("rapidocr_onnxruntime", reason="the [ocr] extra is not installed")
ocr_render = pytest.importorskip("ocr_render")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ocr_render.has_fonts(), reason="Debian fonts missing (scripts/ensure_fonts.sh)"),
]


@pytest.fixture(scope="module")
def ocr_server(tmp_path_factory, blip_embedder, tiny_models):
    import uvicorn

    from api.app import create_app

    root = tmp_path_factory.mktemp("browser_ocr")
    folder = root / "imgs"
    folder.mkdir()
    r = ocr_render.render("Lighthouse", size_px=36, canvas=(640, 400), seed=4)
    r.image.save(folder / "sign.png")
    ocr_render.render("Marmalade", size_px=30, seed=5).image.save(folder / "jar.png")
    settings = Settings(data_dir=root / "data", batch_size=8, model=str(tiny_models["blip-itm"]))
    index_paths(settings, [folder], "signs", embedder=blip_embedder, progress=False, ocr=True)
    app = create_app(settings)

    @app.middleware("http")
    async def csp(request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        return response

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "box": r.box, "size": r.image.size}
    srv.should_exit = True
    thread.join(timeout=10)


def test_matched_line_and_its_box_over_the_image(ocr_server, page):  # noqa: F811
    page.goto(ocr_server["url"] + "/?c=signs&mode=keyword&q=lighthouse")
    _status(page, "1 result")
    assert page.locator("#results .ocr-match").inner_text().strip("“”") == "Lighthouse"
    page.locator("#results li .card").first.click()
    page.wait_for_selector("dialog#detail[open]")
    page.wait_for_function("() => document.querySelector('#detail-img').naturalWidth > 0")
    page.wait_for_function("() => document.querySelectorAll('#detail-boxes polygon').length === 1")
    assert "Lighthouse" in page.locator("#detail-fields").inner_text()
    page.wait_for_timeout(300)  # the overlay is placed on the image's load
    got = page.evaluate(
        "() => { const r = document.querySelector('#detail-boxes polygon').getBoundingClientRect();"
        " return [r.left, r.top, r.right, r.bottom]; }"
    )
    img = page.evaluate(
        "() => { const i = document.querySelector('#detail-img'); const r = i.getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; }"
    )
    # where the rendered word is on screen: the image is scaled to fit its box (object-fit: contain)
    w, h = ocr_server["size"]
    s = min(img[2] / w, img[3] / h)
    ox, oy = img[0] + (img[2] - w * s) / 2, img[1] + (img[3] - h * s) / 2
    x0, y0, x1, y1 = ocr_server["box"]
    want = (ox + x0 * s, oy + y0 * s, ox + x1 * s, oy + y1 * s)
    assert ocr_render.box_iou(tuple(got), want) > 0.4, (got, want)
    page.screenshot(path=str(ARTIFACTS / "detail-ocr-boxes.png"))
