"""A real browser (Debian's headless Chromium, driven by Playwright) uses the page end to end
against a live server: search in each mode, filters, the detail view, uploads, jobs and the
moderation review queue. Each screen is saved to test-artifacts/.

The server adds a strict Content-Security-Policy to every response, so the page is shown to
work without inline scripts, inline styles or eval."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from blipsearch.config import Settings
from indexer.texts import index_texts
from service.indexing import index_paths
from tests.helpers import make_image, write_images

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'"
CAPTIONS = ["a red square on the beach", "a blue circle in a park"]
REVIEW_POLICY = {
    "name": "queue",
    "version": 1,
    "categories": [
        {"name": "blue", "prompts": ["a blue circle"], "action": "review", "itc_threshold": 0.0, "itm_threshold": 0.0}
    ],
}

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


def _prepare(root: Path, settings: Settings, embedder) -> str:
    """photos: 16 images with a tag column and captions; mod: 4 images all sent to review by a
    policy run; a write key."""
    from models import load_itm
    from moderation.batch import moderate_collection
    from moderation.checks import Moderator
    from moderation.policy import parse_policy
    from storage.api_keys import create_key
    from storage.catalog import open_catalog
    from storage.collection import Collection

    images = write_images(root / "imports" / "photos", 16)
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "tag"])
        for i, p in enumerate(images):
            w.writerow([str(p), f"t{i % 2}"])
    index_paths(settings, [root / "manifest.csv"], "photos", embedder=embedder, progress=False)
    coll = Collection.open(settings.data_dir, "photos")
    table = coll.read_table(["id", "uri"])
    by_uri = dict(zip(table.column("uri").to_pylist(), table.column("id").to_pylist(), strict=True))
    captions = {by_uri[str(p)]: {"caption": CAPTIONS[i % 2]} for i, p in enumerate(images)}
    for shard in coll.manifest.shards:
        coll.update_columns(shard.file, {r: v for r, v in captions.items() if shard.min_id <= r <= shard.max_id})

    write_images(root / "imports" / "mod", 4, start=100)
    index_paths(settings, [root / "imports" / "mod"], "mod", embedder=embedder, progress=False)
    catalog = open_catalog(settings.catalog_url())
    moderator = Moderator(parse_policy(REVIEW_POLICY), embedder, load_itm(embedder, batch_size=4))
    moderate_collection(settings, catalog, Collection.open(settings.data_dir, "mod"), moderator, progress=False)
    write_images(root / "imports" / "batch", 12, start=200)
    (root / "imports" / "batch" / "zz_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # a failure with a reason
    # A job a crashed server left failed: the page resumes it.
    write_images(root / "imports" / "resume", 5, start=300)
    paths = {"paths": [str((root / "imports" / "resume").resolve())]}
    catalog.create_job("index", "resumed", settings.model, paths, state="failed")
    # A job another process is running (as its JobWatch reports it): progress, rate, ETA; cancel.
    live = catalog.create_job("index", "live", settings.model, {"paths": []}, state="running")
    progress = {"done": 5, "total": 20, "rate_per_s": 2.5, "eta_s": 6.0}
    catalog.update_job(
        live, counts={"added": 4, "failed": 1, "failed_by_reason": {"too_large": 1}, "progress": progress}
    )
    # A text collection, searched with an image (image → text).
    quotes = root / "quotes.jsonl"
    quotes.write_text(
        "".join(json.dumps({"id": f"q{i}", "text": f"a quote about colour number {i}"}) + "\n" for i in range(6))
    )
    index_texts(settings.data_dir, quotes, "quotes", embedder, progress=False)
    return create_key(catalog, "browser", "write")[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory, blip_embedder, tiny_models):
    import uvicorn

    from api.app import create_app

    root = tmp_path_factory.mktemp("browser")
    settings = Settings(
        data_dir=root / "data",
        batch_size=8,
        model=str(tiny_models["blip-itm"]),
        import_roots=[root / "imports"],
    )
    key = _prepare(root, settings, blip_embedder)
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
    yield {"url": f"http://127.0.0.1:{port}", "root": root, "key": key}
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    (ARTIFACTS / "last").mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(
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
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    pg.problems = problems  # type: ignore[attr-defined]
    yield pg
    try:  # the last state of each test, for a look after a failure
        pg.screenshot(path=str(ARTIFACTS / "last" / f"{request.node.name}.png"), full_page=True)
    finally:
        context.close()
    # No script error and no CSP violation (a refused inline script or style logs an error).
    csp_or_script = [p for p in problems if "Content Security Policy" in p or "page error" in p]
    assert not csp_or_script, csp_or_script


def _results(page, n: int = 1) -> None:
    page.wait_for_function(f"() => document.querySelectorAll('#results li').length >= {n}")


def _images_loaded(page) -> None:
    page.evaluate("() => document.querySelectorAll('#results img').forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
    )


def _status(page, text: str) -> None:
    page.wait_for_function("t => document.querySelector('#status').textContent.includes(t)", arg=text, timeout=20_000)


def _set_key(page, key: str) -> None:
    page.get_by_role("button", name=re.compile("API key")).click()
    page.fill("#key-input", key)
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#key-btn').textContent.includes('✓')")


def test_search_modes_filters_url_state_and_detail(server, page):
    url = server["url"]
    page.goto(url + "/")
    page.wait_for_selector("#collection option[value=photos]", state="attached")
    page.select_option("#collection", "photos")
    # Type a query and press Enter (vector mode).
    page.get_by_label("Describe what you are looking for").fill("a red square")
    page.keyboard.press("Enter")
    _status(page, "results in")
    _results(page, 16)
    _images_loaded(page)
    assert "q=a+red+square" in page.url
    assert all(re.fullmatch(r"match \d{1,3}%", s) for s in page.locator("#results .score").all_inner_texts())
    captions = page.locator("#results .caption").all_inner_texts()
    assert set(captions) == set(CAPTIONS)  # the caption under each thumbnail
    page.screenshot(path=str(ARTIFACTS / "search-vector.png"), full_page=True)

    # Keyword: only records whose caption has the word; BM25 scores.
    page.locator("label[for=mode-keyword]").click()
    page.get_by_label("Describe what you are looking for").fill("beach")
    page.keyboard.press("Enter")
    page.wait_for_function("() => location.search.includes('mode=keyword') && location.search.includes('q=beach')")
    _status(page, "8 results")
    assert set(page.locator("#results .caption").all_inner_texts()) == {CAPTIONS[0]}
    assert all(s == "keyword match" for s in page.locator("#results .score").all_inner_texts())
    assert all(t.startswith("BM25 ") for t in page.locator("#results .score").evaluate_all("e => e.map(x => x.title)"))

    # Hybrid with ITM re-ranking: ITC / ITM / fused scores.
    page.locator("label[for=mode-hybrid]").click()
    page.get_by_label("Re-rank with ITM").check()
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_function("() => location.search.includes('mode=hybrid') && location.search.includes('rerank=1')")
    _status(page, "results in")
    page.wait_for_function("() => document.querySelector('#results .score').textContent.includes('re-ranked')")
    assert re.match(
        r"fused -?\d\.\d{3} ↓ · ITM \d\.\d{3} · ITC", page.locator("#results .score").first.get_attribute("title")
    )
    page.screenshot(path=str(ARTIFACTS / "search-hybrid-reranked.png"), full_page=True)

    # A keyword query that matches nothing says why.
    page.locator("label[for=mode-keyword]").click()
    page.get_by_label("Re-rank with ITM").uncheck()
    page.get_by_label("Describe what you are looking for").fill("zebra")
    page.keyboard.press("Enter")
    _status(page, "No results: no record's text contains the query's words (mode keyword)")
    assert page.locator("#results li").count() == 0

    # Vector again; apply a metadata filter from the collection's keys (tag = t1): a removable chip.
    page.locator("label[for=mode-vector]").click()
    page.get_by_label("Describe what you are looking for").fill("a blue circle")
    page.keyboard.press("Enter")
    _status(page, "16 results")
    page.locator("#filters-panel summary").click()
    page.wait_for_selector("#f-key option[value=tag]", state="attached")
    page.select_option("#f-key", "tag")
    page.fill("#f-value", "t1")
    page.get_by_role("button", name="Add", exact=True).click()
    _status(page, "8 results")
    assert "field=tag%3At1" in page.url
    assert page.locator("#chips .chip").all_inner_texts()[0].startswith("tag = t1")
    assert set(page.locator("#results .caption").all_inner_texts()) == {CAPTIONS[1]}
    # A width bound too: everything filtered out, and the page says so.
    page.fill("#f-minw", "100000")
    page.get_by_role("button", name="Apply filters").click()
    _status(page, "No results: no record matches")
    assert page.locator("#chips .chip").count() == 2
    page.screenshot(path=str(ARTIFACTS / "search-filters.png"), full_page=True)
    # Back restores the previous URL state (8 results, one chip); remove the chip: 16 again.
    page.go_back()
    _status(page, "8 results")
    assert page.locator("#chips .chip").count() == 1 and page.input_value("#f-minw") == ""
    page.get_by_role("button", name="Remove filter tag = t1").click()
    _status(page, "16 results")
    assert page.locator("#chips .chip").count() == 0 and "field=" not in page.url

    # Shareable: the same URL in a fresh page shows the same results.
    shared = page.context.new_page()
    shared.goto(page.url)
    _status(shared, "16 results")
    shared.close()

    # Image query: its own file comes back first; the detail view shows it with metadata.
    query = server["root"] / "imports" / "photos" / "img_00003.jpg"
    page.set_input_files("#image-file", str(query))
    page.wait_for_function("() => document.querySelector('#query-preview img')")
    _status(page, "results in")
    page.locator("#results li .card").first.click()
    page.wait_for_selector("dialog#detail[open]")
    page.wait_for_function("() => document.querySelector('#detail-fields').textContent.includes('img_00003')")
    assert "t1" in page.locator("#detail-meta").inner_text()
    page.wait_for_function("() => document.querySelector('#detail-moderation').textContent.includes('Not checked')")
    page.wait_for_function("() => document.querySelector('#detail-img').naturalWidth > 0")
    page.screenshot(path=str(ARTIFACTS / "detail.png"))
    # Keyboard navigation between results.
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('#detail-pos').textContent.startsWith('2 of')")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("() => document.querySelector('#detail-pos').textContent.startsWith('1 of')")
    page.get_by_role("button", name="More like this").click()
    page.wait_for_function("() => !document.querySelector('dialog#detail').open")
    page.wait_for_function("() => location.search.includes('sim=')")
    _results(page, 12)
    _images_loaded(page)
    page.screenshot(path=str(ARTIFACTS / "more-like-this.png"), full_page=True)

    # Infinite scroll: 12 a page; scrolling to the end loads the next page (the URL keeps k).
    page.goto(url + "/?c=photos&q=a+red+square&k=12")
    _status(page, "12 results")
    page.locator("#load-more").scroll_into_view_if_needed()
    _status(page, "16 results")
    assert "k=36" in page.url and page.locator("#load-more").is_hidden()


def test_phone_width_and_dark_mode(server, page):
    page.set_viewport_size({"width": 390, "height": 844})
    page.emulate_media(color_scheme="dark")
    page.goto(server["url"] + "/?c=photos&q=a+blue+circle")
    _status(page, "results in")
    _images_loaded(page)
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(15, 16, 22)"  # the dark palette
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at phone width ({width}px)"
    columns = page.evaluate(
        "getComputedStyle(document.querySelector('#results')).gridTemplateColumns.split(' ').length"
    )
    assert columns == 2
    page.screenshot(path=str(ARTIFACTS / "phone-dark.png"), full_page=True)
    for view, ready in (("review&c=mod", "#review-list .review-card"), ("jobs", "#jobs-list .job")):
        page.goto(f"{server['url']}/?view={view}")
        page.wait_for_selector(ready)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, view
        page.screenshot(path=str(ARTIFACTS / f"phone-dark-{view.split('&')[0]}.png"), full_page=True)


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    make_image(500 + i).save(buf, "PNG")
    return buf.getvalue()


def test_upload_three_files_by_drag_and_drop(server, page):
    page.goto(server["url"] + "/?view=upload")
    page.wait_for_selector("#view-upload:not([hidden])")
    # Without a key, creating a collection is refused with a readable message.
    page.fill("#new-name", "mine")
    page.get_by_role("button", name="Create").click()
    page.wait_for_function("() => document.querySelector('#toast').textContent.includes('API key')")
    assert "needs an API key" in page.locator("#toast").inner_text()
    _set_key(page, server["key"])
    page.get_by_role("button", name="Create").click()
    page.wait_for_selector("#upload-collection option[value=mine]", state="attached")
    files = [("one.png", _png(1)), ("two.png", _png(2)), ("broken.jpg", b"\xff\xd8 this is not a jpeg")]
    payload = [{"name": n, "b64": base64.b64encode(d).decode(), "type": "image/png"} for n, d in files]
    transfer = page.evaluate_handle(
        """files => {
          const dt = new DataTransfer();
          for (const f of files) {
            const bytes = Uint8Array.from(atob(f.b64), c => c.charCodeAt(0));
            dt.items.add(new File([bytes], f.name, {type: f.type}));
          }
          return dt;
        }""",
        payload,
    )
    page.dispatch_event("#upload-drop", "drop", {"dataTransfer": transfer})
    page.get_by_role("button", name="Upload", exact=True).click()  # the target collection confirmed
    page.wait_for_function("() => document.querySelector('#upload-summary').textContent.startsWith('Done')")
    rows = page.locator("#upload-list .file")
    assert rows.count() == 3
    results = {rows.nth(i).locator(".name").inner_text(): rows.nth(i).locator(".result").inner_text() for i in range(3)}
    assert results["one.png"].startswith("✓ added as #") and results["two.png"].startswith("✓ added as #")
    assert results["broken.jpg"].startswith("✕ failed:") and len(results["broken.jpg"]) > len("✕ failed: ")
    assert [rows.nth(i).locator("progress").get_attribute("max") for i in range(3)] == ["1"] * 3
    assert "2 added, 0 duplicates, 1 failed" in page.locator("#upload-summary").inner_text()
    page.screenshot(path=str(ARTIFACTS / "upload.png"), full_page=True)
    # The same file again: a duplicate.
    page.set_input_files("#upload-files", files=[{"name": "again.png", "mimeType": "image/png", "buffer": _png(1)}])
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_function("() => document.querySelector('#upload-list .file').dataset.result === 'duplicate'")
    assert "mine (2)" in page.locator("#upload-collection option[value=mine]").inner_text()


def test_jobs_list_reaches_succeeded(server, page):
    page.goto(server["url"] + "/?view=jobs")
    page.wait_for_selector("#jobs-list .job")
    assert page.locator("#jobs-list .job[data-kind=moderate]").count() >= 1
    _set_key(page, server["key"])
    page.locator("summary", has_text="Index a server folder").click()
    page.fill("#index-collection", "jobbed")
    page.fill("#index-paths", str(server["root"] / "imports" / "batch"))
    page.get_by_role("button", name="Start indexing").click()
    job = page.locator("#jobs-list .job", has_text="index · jobbed")
    job.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#jobs-list .job')].some(j => j.textContent.includes('jobbed') "
        "&& j.dataset.state === 'succeeded')",
        timeout=60_000,
    )
    assert "13 / 13 items" in job.locator(".job-stats").inner_text()
    counts = job.locator(".counts").inner_text()
    assert "added 12" in counts and "failed 1" in counts
    assert job.locator(".counts li.fail").count() == 1  # the failure, counted by its reason
    assert job.locator("progress").get_attribute("value") == "13"
    job.locator("summary", has_text="1 failure").click()
    assert "zz_broken.jpg" in job.locator(".failures").inner_text()
    # A running job: its progress bar, rate, ETA and failure reasons; cancel asks it to stop.
    live = page.locator("#jobs-list .job", has_text="index · live")
    assert live.get_attribute("data-state") == "running"
    assert "5 / 20 items · 2.5/s · ETA 6.0 s" in live.locator(".job-stats").inner_text()
    assert (
        live.locator("progress").get_attribute("value") == "5" and live.locator("progress").get_attribute("max") == "20"
    )
    assert "too_large 1" in live.locator(".counts li.fail").inner_text()
    live.get_by_role("button", name="Cancel").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#jobs-list .job')].some(j => j.textContent.includes('index · live') "
        "&& j.dataset.state === 'cancelling')"
    )
    assert live.get_by_role("button", name="Cancel").count() == 0
    # Resume the job a crashed server left failed.
    resumed = page.locator("#jobs-list .job", has_text="index · resumed")
    assert resumed.get_attribute("data-state") == "failed"
    resumed.get_by_role("button", name="Resume").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#jobs-list .job')].some(j => j.textContent.includes('resumed') "
        "&& j.dataset.state === 'succeeded')",
        timeout=60_000,
    )
    assert "added 5" in resumed.locator(".counts").inner_text()
    assert resumed.get_by_role("button", name="Resume").count() == 0
    # A path outside the import roots: a readable error, not a crash.
    page.fill("#index-paths", "/etc")
    page.get_by_role("button", name="Start indexing").click()
    page.wait_for_function("() => document.querySelector('#toast').textContent.includes('outside the import roots')")
    page.screenshot(path=str(ARTIFACTS / "jobs.png"), full_page=True)


def test_review_queue_approve_changes_search(server, page):
    url = server["url"]
    hidden = url + "/?c=mod&q=a+blue+circle&hide=1"
    page.goto(hidden)
    _status(page, "hidden by moderation")  # all four are under review
    page.goto(url + "/?view=review&c=mod")
    page.wait_for_function("() => document.querySelectorAll('#review-list .review-card').length === 4")
    first = page.locator("#review-list .review-card").first
    text = first.inner_text()
    assert "review" in text and "blue" in text and "“a blue circle”" in text and "policy queue" in text
    page.wait_for_function(
        "() => [...document.querySelectorAll('#review-list img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=str(ARTIFACTS / "review.png"), full_page=True)
    rid = first.get_attribute("data-id")
    # Approving needs the key.
    first.get_by_role("button", name=f"Approve record {rid}").click()
    page.wait_for_function("() => document.querySelector('#toast').textContent.includes('API key')")
    _set_key(page, server["key"])
    page.locator("#review-list .review-card").first.get_by_role("button", name=f"Approve record {rid}").click()
    page.wait_for_function("() => document.querySelectorAll('#review-list .review-card').length === 3")
    page.wait_for_function("() => document.querySelector('#review-status').textContent.startsWith('3 items to review')")
    # Search honours it: with "hide items under review", the approved record is now the only result.
    page.goto(hidden)
    _status(page, "1 results")
    page.locator("#results li .card").first.click()
    page.wait_for_function("() => document.querySelector('#detail-moderation').textContent.includes('allow')")
    assert "(manual)" in page.locator("#detail-moderation").inner_text()
    assert f"\nRecord\n#{rid}\n" in "\n" + page.locator("#detail-fields").inner_text() + "\n"


def _drop_image(page, selector: str, data: bytes, name: str = "query.png", event: str = "drop") -> None:
    """Drop (or paste) an image file onto the page, as a user dragging a file or pressing Ctrl+V."""
    page.evaluate(
        """([selector, b64, name, kind]) => {
          const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
          const dt = new DataTransfer();
          dt.items.add(new File([bytes], name, {type: "image/png"}));
          const target = document.querySelector(selector);
          const ev = kind === "paste"
            ? new ClipboardEvent("paste", {clipboardData: dt, bubbles: true, cancelable: true})
            : new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true});
          target.dispatchEvent(ev);
        }""",
        [selector, base64.b64encode(data).decode(), name, event],
    )


def test_image_to_text_by_drop_and_paste(server, page):
    # A text collection: the text box is off; a dropped image finds texts.
    page.goto(server["url"] + "/?c=quotes")
    page.wait_for_selector("#collection option[value=quotes]", state="attached")
    assert page.locator("#query").is_disabled()
    _drop_image(page, "#drop", _png(7))
    _status(page, "6 results")
    texts = page.locator("#results li.text-result .text").all_inner_texts()
    assert len(texts) == 6 and all(t.startswith("a quote about colour number") for t in texts)
    page.screenshot(path=str(ARTIFACTS / "image-to-text.png"), full_page=True)
    # Captions of an image collection, by pasting an image: de-duplicated captions.
    page.goto(server["url"] + "/?c=photos&target=captions")
    page.wait_for_selector("#collection option[value=photos]", state="attached")
    assert page.input_value("#target") == "captions"
    _drop_image(page, "body", _png(8), event="paste")
    _status(page, "2 results")
    assert sorted(page.locator("#results .caption").all_inner_texts()) == sorted(CAPTIONS)


def test_relevance_cutoff_and_delete(server, page):
    page.goto(server["url"] + "/?c=photos&q=a+red+square&rerank=1")
    _status(page, "16 results")
    titles = page.locator("#results .score").evaluate_all("e => e.map(x => x.title)")  # the raw scores
    itm = [float(re.search(r"ITM (\d\.\d+)", t).group(1)) for t in titles]
    assert len(itm) == 16 and page.locator("#min-label").inner_text() == "Min ITM probability"
    # The cut-off applies to the ITM probability when re-ranked.
    page.fill("#min-score", "0.99")
    page.get_by_role("button", name="Search", exact=True).click()
    _status(page, "No results: no result clears")
    assert "min=0.99" in page.url and page.locator("#chips .chip", has_text="score ≥ 0.99").count() == 1
    page.get_by_role("button", name="Remove filter score ≥ 0.99").click()
    _status(page, "16 results")
    low = min(itm) - 0.02
    if low > 0:
        page.fill("#min-score", f"{low:.2f}")
        page.get_by_role("button", name="Search", exact=True).click()
        _status(page, "16 results")
        assert f"min={low:.2f}" in page.url

    # Delete from the detail view, with a key: the record is gone from the results.
    _set_key(page, server["key"])
    page.locator("#results li .card").first.click()
    page.wait_for_selector("dialog#detail[open]")
    page.wait_for_function("() => document.querySelector('#detail-fields').textContent.includes('img_')")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete").click()
    page.wait_for_function("() => !document.querySelector('dialog#detail').open")
    _status(page, "15 results")
    assert "Deleted record" in page.locator("#toast").inner_text()


def test_keyboard_only(server, page):
    page.goto(server["url"] + "/?c=photos&q=a+red+square")
    _status(page, "results in")
    # Tab from the top reaches the search box, the controls, then the results.
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.matches('#results .card')"):
            break
    else:
        raise AssertionError("Tab never reached a result")
    page.keyboard.press("Enter")
    page.wait_for_selector("dialog#detail[open]")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('#detail-pos').textContent.startsWith('2 of')")
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.querySelector('dialog#detail').open")
    # Focus returns to the result shown last. The dialog's "close" event (which moves it there) is
    # a task queued after `open` turns false, after the browser put focus back on the card that
    # opened the dialog: wait for it rather than read the focus in between.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results .card')].indexOf(document.activeElement) === 1", timeout=5000
    )


def test_review_queue_draws_detector_boxes(server, page, tiny_models):
    """A record sent to review by the NudeNet detector shows its box over the thumbnail."""
    from moderation.batch import moderate_collection
    from moderation.checks import Moderator
    from moderation.policy import parse_policy
    from storage.catalog import open_catalog
    from storage.collection import Collection
    from tests.test_moderation_kinds import skin

    root = server["root"]
    settings = Settings(data_dir=root / "data", batch_size=8, model=str(tiny_models["blip-itm"]))
    folder = root / "det"
    folder.mkdir()
    skin(3).save(folder / "s.png")  # the shipped model finds one box here (tests/test_moderation_kinds.py)
    index_paths(settings, [folder], "det", model=settings.model, progress=False)
    pol = parse_policy({"name": "nude", "version": 1, "detectors": [
        {"name": "n", "detector": "nudenet", "classes": {"BUTTOCKS_EXPOSED": "nudity"}, "threshold": 0.3,
         "action": "review"}]})  # fmt: skip
    coll = Collection.open(settings.data_dir, "det")
    moderate_collection(
        settings, open_catalog(settings.catalog_url()), coll, Moderator(pol, None, None), progress=False
    )
    page.goto(server["url"] + "/?view=review&c=det")
    page.wait_for_function("() => document.querySelectorAll('#review-list .review-card').length === 1")
    card = page.locator("#review-list .review-card").first
    assert "nudity · BUTTOCKS_EXPOSED" in card.inner_text() and "policy nude v1" in card.inner_text()
    rect = card.locator("svg.det-boxes rect")
    assert rect.count() == 1
    box = rect.bounding_box()
    thumb = card.locator(".thumb-boxes").bounding_box()
    assert box is not None and thumb is not None and box["width"] > 4 and box["height"] > 4
    assert thumb["x"] - 1 <= box["x"] and box["x"] + box["width"] <= thumb["x"] + thumb["width"] + 1
    page.screenshot(path=str(ARTIFACTS / "review-detector.png"), full_page=True)
