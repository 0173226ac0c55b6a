"""A newcomer's first run of the page, in a real browser (Debian's headless Chromium): the page
opens on the newest collection and browses it, warns that the demo model is random, shows
scores in words, chips for "similar to" and image queries, checks the API key, confirms
uploads, hides what the server does not offer; /docs and /redoc work with the network cut off;
phones get folded controls and touch wording. The server's own Content-Security-Policy is kept.

Screens are saved to docs/img/ (the README's tour shows them)."""

from __future__ import annotations

import base64
import io
import re
import threading
import time
from pathlib import Path

import pytest

from blipsearch.config import Settings
from service.indexing import index_paths
from tests.helpers import make_image, write_images
from tests.test_browser import CHROMIUM, _free_port, _status, browser  # noqa: F401 (a module fixture)

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
CAPTIONS = ["a red square on the beach", "a blue circle in a park"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian chromium not installed (scripts/ensure_chromium.sh)"
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, blip_embedder, tiny_models):
    """Two collections on a random test model, "aaa-old" indexed before "newer"; no import
    roots; full paths shown (so a record's folder can become a uri_prefix filter); a write key."""
    import uvicorn

    from api.app import create_app
    from storage.api_keys import create_key
    from storage.catalog import open_catalog
    from storage.collection import Collection

    root = tmp_path_factory.mktemp("first_run")
    settings = Settings(
        data_dir=root / "data",
        batch_size=8,
        model=str(tiny_models["blip-itm"]),
        expose_paths=True,
        no_match_threshold=0.99,  # a random model's ITM probabilities stay below: no confident match
    )
    write_images(root / "old", 3, start=50)
    index_paths(settings, [root / "old"], "aaa-old", embedder=blip_embedder, progress=False)
    time.sleep(0.05)  # the collections' change times differ
    images = write_images(root / "newer", 8)
    index_paths(settings, [root / "newer"], "newer", embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "newer")
    table = coll.read_table(["id", "uri"])
    by_uri = dict(zip(table.column("uri").to_pylist(), table.column("id").to_pylist(), strict=True))
    captions = {by_uri[str(p)]: {"caption": CAPTIONS[i % 2]} for i, p in enumerate(images)}
    for shard in coll.manifest.shards:
        coll.update_columns(shard.file, {r: v for r, v in captions.items() if shard.min_id <= r <= shard.max_id})
    key = create_key(open_catalog(settings.catalog_url()), "first-run", "write")[0]
    app = create_app(settings)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "root": root, "key": key, "images": images}
    srv.should_exit = True
    thread.join(timeout=10)


def _context(browser, server, **kwargs):  # noqa: F811
    """A browser context that can reach only the server: every other request is aborted and
    recorded (the offline check)."""
    context = browser.new_context(**{"viewport": {"width": 1280, "height": 860}, **kwargs})
    outside: list[str] = []

    def gate(route):
        if route.request.url.startswith(server["url"]) or route.request.url.startswith(("blob:", "data:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", gate)
    context.outside = outside  # type: ignore[attr-defined]
    return context


def _watch(page) -> list[str]:
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    return problems


def _shot(page, name: str) -> None:
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_IMG / name), type="jpeg", quality=70)


def _no_script_errors(problems: list[str]) -> None:
    bad = [p for p in problems if "Content Security Policy" in p or "page error" in p]
    assert not bad, bad


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    make_image(700 + i).save(buf, "PNG")
    return buf.getvalue()


def test_docs_work_offline(server, browser):  # noqa: F811
    context = _context(browser, server)
    page = context.new_page()
    problems = _watch(page)
    page.goto(server["url"] + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)  # Swagger UI drew the operations
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/v1/search/text" in p for p in paths) and any("/v1/collections/{name}/images" in p for p in paths)
    _shot(page, "docs.jpg")
    _no_script_errors(problems)
    page.goto(server["url"] + "/redoc")
    page.wait_for_function("() => document.body.innerText.includes('/v1/search/text')", timeout=20_000)
    assert not context.outside, f"/docs or /redoc reached outside the server: {context.outside}"
    # ReDoc's sidebar always tries its vendor's logo from a CDN (and hides it when that fails): the
    # policy blocks it, which is the point. Any other block or script error fails.
    logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
    _no_script_errors([p for p in problems if not (logo in p and "img-src" in p)])
    context.close()


def test_first_run_browse_banner_scores_and_chips(server, browser):  # noqa: F811
    context = _context(browser, server)
    page = context.new_page()
    problems = _watch(page)
    url = server["url"]
    page.goto(url + "/")
    # Opens on the collection indexed last, not the first by name, and browses it newest first.
    _status(page, "Newest first: 8 of 8")
    assert page.input_value("#collection") == "newer"
    ids = [int(x) for x in page.locator("#results li").evaluate_all("els => els.map(e => e.dataset.id)")]
    assert ids == sorted(ids, reverse=True) and len(ids) == 8
    banner = page.locator("#model-banner")
    assert banner.is_visible() and "randomly initialised test model" in banner.inner_text()
    page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.complete)")
    _shot(page, "first-run.jpg")
    # The last-used collection wins over the newest one on the next visit.
    page.select_option("#collection", "aaa-old")
    page.get_by_role("button", name="Search", exact=True).click()
    _status(page, "Newest first: 3 of 3")
    page.goto(url + "/")
    _status(page, "Newest first: 3 of 3")
    assert page.input_value("#collection") == "aaa-old"
    assert page.locator("#model-banner").is_visible()
    page.select_option("#collection", "newer")

    # Scores in words by default; raw numbers on demand, the one that orders the results first.
    page.get_by_label("Describe what you are looking for").fill("a red square")
    page.keyboard.press("Enter")
    _status(page, "8 results")
    plain = page.locator("#results .score").all_inner_texts()
    assert all(re.fullmatch(r"match \d{1,3}%", s) for s in plain), plain
    page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.complete)")
    _shot(page, "search.jpg")
    page.get_by_label("Raw scores").check()
    raw = page.locator("#results .score").all_inner_texts()
    assert all(re.fullmatch(r"ITC -?\d\.\d{3} ↓", s) for s in raw), raw
    page.get_by_label("Raw scores").uncheck()
    page.get_by_label("Re-rank with ITM").check()
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_function("() => document.querySelector('#results .score').textContent.includes('re-ranked')")
    assert re.fullmatch(r"match \d{1,3}% · re-ranked", page.locator("#results .score").first.inner_text())
    assert page.locator("#results .score").first.get_attribute("data-ordered-by") == "fused"
    page.get_by_label("Raw scores").check()
    assert re.match(
        r"fused -?\d\.\d{3} ↓ · ITM \d\.\d{3} · ITC -?\d\.\d{3}", page.locator("#results .score").first.inner_text()
    )
    page.get_by_label("Raw scores").uncheck()
    page.get_by_label("Re-rank with ITM").uncheck()

    # The cut-off reaches below zero (random-model ITC values) and is gone in keyword mode.
    assert page.get_attribute("#min-slider", "min") == "-1"
    page.fill("#min-score", "-0.5")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_function("() => location.search.includes('min=-0.5')")
    _status(page, "8 results")
    assert page.locator("#chips .chip", has_text="score ≥ -0.5").count() == 1
    page.get_by_role("button", name="Remove filter score ≥ -0.5").click()
    page.wait_for_function("() => !location.search.includes('min=')")
    page.locator("label[for=mode-keyword]").click()
    assert page.locator("#cutoff").is_hidden()
    page.locator("label[for=mode-vector]").click()
    assert page.locator("#cutoff").is_visible()

    # Empty results say why (the server's empty_reason when it gives one).
    page.goto(url + "/?c=newer&q=a+red+square&minw=100000")
    _status(page, "No results:")
    assert re.search(r"filter|width", page.locator("#status").inner_text())

    # "More like this": a removable "similar to #id" chip; removing it goes back to browsing.
    page.goto(url + "/?c=newer")
    _status(page, "Newest first")
    page.locator("#results li .card").first.click()
    page.wait_for_selector("dialog#detail[open]")
    first_id = page.locator("#results li").first.get_attribute("data-id")
    page.get_by_role("button", name="More like this").click()
    page.wait_for_function("() => location.search.includes('sim=')")
    _status(page, "results in")
    chip = page.locator("#chips .chip", has_text=f"similar to #{first_id}")
    assert chip.count() == 1
    page.get_by_role("button", name=f"Remove similar to #{first_id}").click()
    _status(page, "Newest first")
    assert "sim=" not in page.url and page.locator("#chips .chip").count() == 0

    # An image query shows as a chip and can be cleared.
    page.set_input_files("#image-file", str(server["images"][3]))
    _status(page, "results in")
    assert page.locator("#chips .chip", has_text="image: img_00003.jpg").count() == 1
    page.get_by_role("button", name="Remove image: img_00003.jpg").click()
    _status(page, "Newest first")
    assert page.locator("#query-preview").is_hidden() and page.locator("#chips .chip").count() == 0
    _no_script_errors(problems)
    context.close()


def test_detail_view_fields_download_and_folder(server, browser):  # noqa: F811
    context = _context(browser, server)
    page = context.new_page()
    problems = _watch(page)
    page.goto(server["url"] + "/?c=newer")
    _status(page, "Newest first")
    page.locator("#results li .card").first.click()
    page.wait_for_function("() => document.querySelector('#detail-fields').textContent.includes('File size')")
    page.wait_for_function("() => document.querySelector('#detail-img').naturalWidth > 0")
    text = page.locator("#detail").inner_text()
    caption = page.locator("#detail-title").inner_text()
    assert caption in CAPTIONS and text.count(caption) == 1  # the caption once
    fields = page.locator("#detail-fields dt").all_inner_texts()
    assert {"Record", "File", "Dimensions", "Format", "File size", "Added"} <= set(fields)
    assert "added_at" not in text and "bytes" not in fields
    # A small image is shown at its own size, not blown up.
    natural, shown = page.evaluate(
        "() => { const i = document.querySelector('#detail-img'); return [i.naturalWidth, i.clientWidth]; }"
    )
    assert shown <= natural, (natural, shown)
    href = page.get_attribute("#detail-download", "href")
    assert href.endswith("/file") and page.locator("#detail-download").is_visible()
    assert page.request.get(server["url"] + href if href.startswith("/") else href).ok
    _shot(page, "detail.jpg")
    # The full path becomes a uri_prefix filter.
    page.get_by_role("button", name="Only this folder").click()
    page.wait_for_function("() => location.search.includes('prefix=')")
    _status(page, "Newest first: 8 of 8")
    assert page.locator("#chips .chip", has_text=f"uri starts with {server['root'] / 'newer'}").count() == 1
    _no_script_errors(problems)
    context.close()


def test_key_check_upload_confirm_and_results(server, browser):  # noqa: F811
    context = _context(browser, server)
    page = context.new_page()
    problems = _watch(page)
    page.goto(server["url"] + "/?view=upload")
    page.wait_for_selector("#view-upload:not([hidden])")
    # A wrong key is refused in the dialog; the right one is kept with its name.
    page.get_by_role("button", name=re.compile("API key")).click()
    page.fill("#key-input", "bsk_nope_nope")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#key-error').textContent.includes('does not accept')")
    assert page.locator("#key-dialog").is_visible() and "✓" not in page.locator("#key-btn").inner_text()
    page.fill("#key-input", server["key"])
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#key-btn').textContent.includes('✓')")
    assert "first-run" in page.locator("#toast").inner_text()
    # "uploads" is refused by the form as by the server, with the reason.
    page.wait_for_function("() => document.querySelector('#new-name').pattern.includes('[uU][pP]')")
    page.fill("#new-name", "uploads")
    assert page.eval_on_selector("#new-name", "e => e.validity.patternMismatch")
    page.get_by_role("button", name="Create").click()
    assert "keeps for itself" in page.eval_on_selector("#new-name", "e => e.validationMessage")
    page.fill("#new-name", "holidays")
    assert page.eval_on_selector("#new-name", "e => e.validity.valid")
    # Dropped files wait for a confirmation naming the collection.
    page.select_option("#upload-collection", "newer")
    dup = server["images"][0].read_bytes()
    files = [
        ("fresh.png", _png(1), "image/png"),
        ("again.jpg", dup, "image/jpeg"),
        ("broken.jpg", b"\xff\xd8 no", "image/jpeg"),
    ]
    payload = [{"name": n, "b64": base64.b64encode(d).decode(), "type": t} for n, d, t in files]
    transfer = page.evaluate_handle(
        """files => { const dt = new DataTransfer();
          for (const f of files) {
            const bytes = Uint8Array.from(atob(f.b64), c => c.charCodeAt(0));
            dt.items.add(new File([bytes], f.name, {type: f.type}));
          }
          return dt; }""",
        payload,
    )
    page.dispatch_event("#upload-drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#upload-confirm:not([hidden])")
    assert page.locator("#upload-confirm-text").inner_text() == "Upload 3 files to “newer”?"
    assert page.locator("#upload-list .file").count() == 0  # nothing sent yet
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_function("() => document.querySelector('#upload-summary').textContent.startsWith('Done')")
    rows = {r.locator(".name").inner_text(): r for r in page.locator("#upload-list .file").all()}
    kinds = {n: r.get_attribute("data-result") for n, r in rows.items()}
    assert kinds == {"fresh.png": "added", "again.jpg": "duplicate", "broken.jpg": "failed"}
    edges = {n: r.evaluate("e => getComputedStyle(e).borderLeftColor") for n, r in rows.items()}
    assert len(set(edges.values())) == 3, edges  # three different looks
    marks = {n: r.locator(".result").inner_text()[0] for n, r in rows.items()}
    assert marks == {"fresh.png": "✓", "again.jpg": "=", "broken.jpg": "✕"}
    _shot(page, "upload.jpg")
    # No import roots: the jobs screen does not offer indexing a server folder.
    page.goto(server["url"] + "/?view=jobs")
    page.wait_for_selector("#index-none:not([hidden])")
    assert page.locator("#index-panel").is_hidden()
    _no_script_errors(problems)
    context.close()


def test_phone_folds_controls_and_speaks_touch(server, browser):  # noqa: F811
    context = _context(browser, server, viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    page = context.new_page()
    problems = _watch(page)
    page.goto(server["url"] + "/?c=newer")
    _status(page, "Newest first")
    assert page.locator("#search-options").is_hidden() and page.locator("#filters-panel").is_hidden()
    first = page.locator("#results li").first.bounding_box()
    assert first is not None and first["y"] < 844, "the first result is below the first screen"
    _shot(page, "phone.jpg")
    page.get_by_role("button", name="Options and filters").click()
    assert page.locator("#search-options").is_visible()
    assert page.locator("#options-toggle").get_attribute("aria-expanded") == "true"
    hint = page.locator("#drop-help").inner_text()
    assert "Ctrl+V" not in hint and "tap" in hint
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _no_script_errors(problems)
    context.close()


def test_query_understood_feedback_and_no_match(server, browser):  # noqa: F811
    context = _context(browser, server)
    page = context.new_page()
    problems = _watch(page)
    url = server["url"]
    # The parsed query shows as chips; removing one edits the query and searches again.
    page.goto(url + "/?c=newer&q=" + "a+red+square+-circle+format%3AJPEG")
    _status(page, "results in")
    chips = page.locator("#understood .chip").all_inner_texts()
    assert [c.rstrip("×").strip() for c in chips] == ["“a red square”", "not “circle”", "format:JPEG → fields.format"]
    page.get_by_role("button", name="Remove not “circle”").click()
    page.wait_for_function("() => new URLSearchParams(location.search).get('q') === 'a red square format:JPEG'")
    page.wait_for_function("() => !document.querySelector('#understood .chip.negative')")
    assert page.locator("#understood .chip").count() == 2
    page.get_by_role("button", name="Search the words as typed").click()
    page.wait_for_function("() => location.search.includes('raw=1')")
    page.wait_for_function("() => document.querySelector('#understood').textContent.includes('Searched as typed')")
    # 👍 / 👎 re-run with positive_ids / negative_ids; the liked record is not returned.
    page.goto(url + "/?c=newer&q=a+red+square")
    _status(page, "results in")
    n = page.locator("#results li").count()  # 8, or 9 after the upload test added one
    liked = int(page.locator("#results li").first.get_attribute("data-id"))
    page.get_by_role("button", name=f"More like #{liked}").click()
    page.wait_for_function(f"() => location.search.includes('like={liked}')")
    _status(page, f"{n - 1} results")
    ids = [int(x) for x in page.locator("#results li").evaluate_all("els => els.map(e => e.dataset.id)")]
    assert liked not in ids and page.locator("#chips .chip", has_text=f"more like #{liked}").count() == 1
    disliked = ids[-1]
    page.get_by_role("button", name=f"Less like #{disliked}").click()
    page.wait_for_function(f"() => location.search.includes('unlike={disliked}')")
    _status(page, f"{n - 2} results")
    page.get_by_role("button", name=f"Remove more like #{liked}").click()
    page.wait_for_function(f"() => !location.search.includes('&like={liked}')")
    _status(page, f"{n - 1} results")
    # no_confident_match: the banner shows exactly when the server says so.
    page.goto(url + "/?c=newer&q=a+red+square&rerank=1")
    _status(page, "results in")
    body = {"query": "a red square", "collection": "newer", "k": 24, "rerank": True, "rerank_k": 64}
    assert page.request.post(url + "/v1/search/text", data=body).json()["no_confident_match"] is True
    assert page.locator("#nomatch-banner").is_visible()
    page.get_by_label("Re-rank with ITM").uncheck()
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_function("() => !location.search.includes('rerank=1')")
    _status(page, "results in")
    assert page.locator("#nomatch-banner").is_hidden()
    _no_script_errors(problems)
    context.close()
