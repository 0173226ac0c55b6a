"""The page's photo filters and stacks in a real browser (Debian's Chromium, driven by Playwright)
against a live server: date taken, near a GPS position, place, camera and the order by date
taken are sent as the API's ``filters`` fields and ``sort``, shown as removable chips, and the
results equal the API's for the same request (and brute force over the stored fields); the
controls are off on a collection where no record has the field; the keeper's detail view lists
its stack (each member findable) and unstacks it."""

from __future__ import annotations

import json
import math
import shutil
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from blipsearch.config import Settings
from service.indexing import index_paths
from storage import stacks
from storage.api_keys import create_key
from storage.catalog import open_catalog
from storage.collection import Collection
from tests.helpers import write_images
from tests.live_server import serve
from tests.photo_library import PLACES, random_library, write_library

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian chromium not installed (scripts/test.sh installs it)"
    ),
]


def _fold(s: str | None) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", s or "") if not unicodedata.combining(c)).casefold()


def _utc(v: datetime | None) -> datetime | None:
    return None if v is None else (v if v.tzinfo else v.replace(tzinfo=timezone.utc))


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_models, blip_embedder):
    root = tmp_path_factory.mktemp("browser-photos")
    settings = Settings(data_dir=root / "data", model=str(tiny_models["blip-itm"]), batch_size=8, jpeg_draft=False)
    write_library(root / "lib", random_library(28, seed=5))
    assert index_paths(settings, [root / "lib"], "photos", embedder=blip_embedder, progress=False).failures == []
    write_images(root / "plain", 3)  # no EXIF at all: no photo field
    index_paths(settings, [root / "plain"], "plain", embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "photos")
    rows = coll.read_table().drop(["embedding"]).to_pylist()
    key = create_key(open_catalog(settings.catalog_url()), "page", "write")[0]
    with serve(settings) as url:
        yield {"url": url, "rows": rows, "key": key, "settings": settings}


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors


def _shown_ids(page) -> list[int]:
    return [int(x) for x in page.locator("#results li").evaluate_all("els => els.map(e => e.dataset.id)")]


def _apply(page, site) -> tuple[dict, list[int]]:
    """Apply the filter form; the text-search body the page sent, and the ids it then shows
    (after they equal, within the timeout, what the API answers to that very body)."""
    with page.expect_response(lambda r: "/v1/search/text" in r.url) as resp:
        page.get_by_role("button", name="Apply filters").click()
    body = json.loads(resp.value.request.post_data or "{}")
    api = httpx.post(f"{site['url']}/v1/search/text", json=body, timeout=60).json()
    want = [r["id"] for r in api["results"]]
    page.wait_for_function(
        "want => JSON.stringify([...document.querySelectorAll('#results li')].map(e => Number(e.dataset.id)))"
        " === JSON.stringify(want)",
        arg=want,
        timeout=20_000,
    )
    return body, _shown_ids(page)


def test_photo_filters_are_the_apis_filters_with_chips(page, site):
    rows = site["rows"]
    page.goto(f"{site['url']}/?c=photos&q=a+photo&k=96")
    page.wait_for_function("() => document.querySelectorAll('#results li').length > 0", timeout=30_000)
    page.locator("#filters-panel summary").click()
    page.wait_for_function("() => !document.querySelector('#f-taken-set').disabled")
    assert page.locator("#f-sort").is_enabled()  # a text query can be ordered by date taken

    # Date taken and camera, newest taken first.
    page.fill("#f-tafter", "2019-06-01")
    page.fill("#f-tbefore", "2022-12-31")
    page.fill("#f-camera", "canon")
    page.select_option("#f-sort", "taken_at")
    body, ids = _apply(page, site)
    assert body["filters"] == {"taken_after": "2019-06-01T00:00:00", "taken_before": "2023-01-01T00:00:00",
                               "camera": "canon"}  # fmt: skip
    assert body["sort"] == "taken_at"
    lo, hi = datetime(2019, 6, 1, tzinfo=timezone.utc), datetime(2023, 1, 1, tzinfo=timezone.utc)
    brute = {
        r["id"]
        for r in rows
        if r["taken_at"] is not None
        and lo <= _utc(r["taken_at"]) < hi
        and ("canon" in _fold(r["camera_make"]) or "canon" in _fold(r["camera_model"]))
    }
    assert brute and set(ids) == brute
    taken = [_utc(next(r["taken_at"] for r in rows if r["id"] == i)) for i in ids]
    assert taken == sorted(taken, reverse=True)  # newest taken first
    chips = page.locator("#chips .chip").all_inner_texts()
    assert any("taken from 2019-06-01" in c for c in chips) and any("camera: canon" in c for c in chips)
    assert any("newest taken first" in c for c in chips)
    assert "tafter=2019-06-01" in page.url and "camera=canon" in page.url and "sort=taken_at" in page.url

    # Removing the camera chip searches again without it (the API's results, more of them).
    with page.expect_response(lambda r: "/v1/search/text" in r.url) as resp:
        page.get_by_role("button", name="Remove filter camera: canon").click()
    body2 = json.loads(resp.value.request.post_data or "{}")
    assert "camera" not in body2["filters"] and body2["filters"]["taken_after"] == "2019-06-01T00:00:00"
    want = [r["id"] for r in httpx.post(f"{site['url']}/v1/search/text", json=body2, timeout=60).json()["results"]]
    page.wait_for_function("n => document.querySelectorAll('#results li').length === n", arg=len(want), timeout=20_000)
    assert _shown_ids(page) == want and len(want) > len(ids)

    # Near Paris (50 km) and a place, accent- and case-insensitive.
    page.locator("#filters-panel summary").click() if not page.locator("#f-nlat").is_visible() else None
    page.fill("#f-tafter", "")
    page.fill("#f-tbefore", "")
    lat, lon = PLACES["paris"]
    page.fill("#f-nlat", str(lat))
    page.fill("#f-nlon", str(lon))
    page.fill("#f-nrad", "50")
    page.fill("#f-place", "ÎLE-DE-france")
    page.select_option("#f-sort", "")
    body, ids = _apply(page, site)
    assert body["filters"] == {"near": f"{lat},{lon},50", "place": "ÎLE-DE-france"} and body["sort"] == "relevance"
    brute = {
        r["id"]
        for r in rows
        if r["gps_lat"] is not None
        and _km(lat, lon, r["gps_lat"], r["gps_lon"]) <= 50
        and "ile-de-france" in {_fold(r["country"]), _fold(r["region"]), _fold(r["city"])}
    }
    assert brute and set(ids) == brute
    assert any("within 50 km of" in c for c in page.locator("#chips .chip").all_inner_texts())

    # Half a "near" is refused with a message, not sent without it.
    page.fill("#f-nrad", "")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_function("() => document.querySelector('#toast').textContent.includes('Near needs')")


def test_photo_controls_are_off_where_no_record_has_the_field(page, site):
    page.goto(f"{site['url']}/?c=plain")
    page.wait_for_function("() => document.querySelectorAll('#results li').length === 3", timeout=30_000)
    page.locator("#filters-panel summary").click()
    page.wait_for_function("() => document.querySelector('#f-taken-set').disabled")
    for sel in ("#f-taken-set", "#f-near-set", "#f-place-set", "#f-camera-set"):
        assert page.locator(sel).get_attribute("title")  # says why
    assert page.locator("#f-tafter").is_disabled() and page.locator("#f-camera").is_disabled()
    assert page.locator("#f-sort option[value=taken_at]").is_disabled()
    assert page.locator("#f-sort").is_disabled()  # browsing: no text query to order
    assert page.locator("#f-from").is_enabled()  # the other filters stay
    page.goto(f"{site['url']}/?c=photos")
    page.locator("#filters-panel summary").click()
    page.wait_for_function("() => !document.querySelector('#f-place-set').disabled", timeout=20_000)
    assert page.locator("#f-near-set").is_enabled() and page.locator("#f-camera-set").is_enabled()


def test_keeper_detail_lists_its_stack_and_unstacks(page, site):
    coll = Collection.open(site["settings"].data_dir, "photos")
    ids = sorted(r["id"] for r in site["rows"])
    keeper, members = ids[-1], ids[:2]  # the keeper is the newest: first when browsing
    stacks.stack(coll, keeper, members, tier="near")
    try:
        page.goto(f"{site['url']}/?c=photos&k=96")
        page.evaluate(f"() => sessionStorage.setItem('blipsearch.key', '{site['key']}')")
        page.wait_for_function(f"() => document.querySelectorAll('#results li').length === {len(ids) - 2}")
        assert not set(members) & set(_shown_ids(page))  # search shows the keeper only
        page.locator(f"#results li[data-id='{keeper}'] .card").click()
        page.wait_for_selector("dialog#detail[open]")
        page.wait_for_selector("#detail-stack:not([hidden]) .stack-member")
        listed = page.locator("#detail-stack .stack-member").evaluate_all("els => els.map(e => Number(e.dataset.id))")
        assert listed == members
        text = page.locator("#detail-stack").text_content() or ""
        uris = {r["id"]: r["uri"] for r in site["rows"]}
        assert "2 more copies" in text and all(Path(uris[m]).name in text for m in members)
        page.wait_for_function(
            "() => [...document.querySelectorAll('#detail-stack img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        # findable: "more like" a member opens its similar search, which may show it
        with page.expect_response(lambda r: "/v1/search/similar" in r.url) as resp:
            page.get_by_role("button", name=f"More like #{members[0]}").click()
        assert json.loads(resp.value.request.post_data or "{}")["id"] == members[0]
        page.goto(f"{site['url']}/?c=photos&k=96")
        page.wait_for_function(f"() => document.querySelectorAll('#results li').length === {len(ids) - 2}")
        page.locator(f"#results li[data-id='{keeper}'] .card").click()
        page.wait_for_selector("#detail-stack:not([hidden]) .stack-member")
        with page.expect_response(lambda r: "/stacks" in r.url and r.request.method == "DELETE"):
            page.get_by_role("button", name="Unstack").click()
        page.wait_for_function(f"() => document.querySelectorAll('#results li').length === {len(ids)}")
        assert stacks.load(coll.root) == {}
    finally:
        stacks._save(coll.root, {})
