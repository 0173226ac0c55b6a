"""Slow and greedy clients against a live server: a stalled body is cut off (408) and its bytes
leave the in-flight budget; one client holds at most its share of the budget; small bodies
(searches) keep a reserve that large uploads cannot take."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from api.app import create_app
from blipsearch.config import Settings
from storage.api_keys import create_key
from storage.catalog import open_catalog
from tests.test_request_guard import _chunk, _first_part, _headers, _response

KIB = 1024
BUDGET = 3 * KIB * KIB  # reserve for small bodies: 384 KiB


@pytest.fixture
def server(tmp_path) -> Iterator[tuple[int, list[str], object]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        model=str(tmp_path / "no-model"),  # never loaded
        max_request_bytes=KIB * KIB,
        max_upload_bytes=128 * KIB,  # a "small" body: up to 192 KiB
        max_inflight_body_bytes=BUDGET,
        max_inflight_body_bytes_per_client=1536 * KIB,
        min_body_rate=1024 * KIB,
        body_rate_grace_s=3.0,
    )
    catalog = open_catalog(settings.catalog_url())
    keys = [create_key(catalog, f"w{i}", "write")[0] for i in range(4)]
    app = create_app(settings)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield srv.servers[0].sockets[0].getsockname()[1], keys, app
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def _guard(app) -> object:
    mw = app.middleware_stack
    while mw is not None and type(mw).__name__ != "RequestGuard":
        mw = getattr(mw, "app", None)
    assert mw is not None
    return mw


def _hold(port: int, key: str | None, size: int, path: str = "/v1/collections/c/images") -> socket.socket:
    """A connection that sent ``size`` body bytes of an upload and then stalls."""
    sock = socket.create_connection(("127.0.0.1", port))
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    sock.sendall(_headers(path, auth) + _chunk(_first_part()) + _chunk(b"\0" * size))
    return sock


def _wait_held(app, nbytes: int) -> None:
    guard = _guard(app)
    deadline = time.monotonic() + 5
    while guard.inflight < nbytes and time.monotonic() < deadline:
        time.sleep(0.02)
    assert guard.inflight >= nbytes


def test_a_stalled_body_is_cut_off_and_frees_the_budget(server):
    port, keys, app = server
    socks = [_hold(port, key, 700 * KIB) for key in keys[:3]]
    _wait_held(app, 3 * 700 * KIB)  # the budget is nearly all held by stalled clients
    for sock in socks:  # each is answered 408 once its rate falls under the minimum
        status, _, body = _response(sock, timeout=10)
        assert status == 408 and body["code"] == "request_timeout" and "BLIPSEARCH_MIN_BODY_RATE" in body["detail"]
        sock.close()
    assert _guard(app).inflight == 0 and _guard(app).by_client == {}


def test_one_client_holds_at_most_its_share(server):
    port, keys, app = server
    first = _hold(port, keys[0], 900 * KIB)
    _wait_held(app, 900 * KIB)
    second = _hold(port, keys[0], 900 * KIB)  # the same key: over its 1.5 MiB share
    status, headers, body = _response(second)
    assert status == 503 and "PER_CLIENT" in body["detail"] and int(headers["retry-after"]) >= 1
    other = _hold(port, keys[1], 900 * KIB)  # another key still gets in
    _wait_held(app, 1800 * KIB)
    for sock in (first, second, other):
        sock.close()


def test_small_bodies_keep_a_reserve_that_uploads_cannot_take(server):
    port, keys, app = server
    held = [_hold(port, key, 850 * KIB) for key in keys[:3]]  # 2.49 MiB of the 3 MiB in flight
    _wait_held(app, 2550 * KIB)
    late = _hold(port, keys[3], 500 * KIB)  # a large upload may not take the reserve
    assert _response(late)[0] == 503
    search = _hold(port, None, 150 * KIB, "/v1/search/image")  # an anonymous search: a small body
    time.sleep(0.3)
    assert _guard(app).inflight >= 2550 * KIB + 150 * KIB  # held, not refused
    for sock in (*held, late, search):
        sock.close()
