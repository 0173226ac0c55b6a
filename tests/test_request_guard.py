"""The request guard against a live uvicorn server: a keyless upload is
refused from its headers before any body byte is read, a chunked body is cut off at the
per-request cap, and concurrent bodies share one in-flight budget."""

from __future__ import annotations

import json
import select
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from api.app import create_app
from blipsearch.config import Settings
from storage.api_keys import create_key
from storage.catalog import open_catalog

CAP = 1 << 20  # bytes per request
BUDGET = 3 << 19  # 1.5 MiB of bodies in flight across requests


@pytest.fixture
def server(tmp_path, monkeypatch) -> Iterator[tuple[int, dict[str, str], Path]]:
    spool = tmp_path / "spool"  # where multipart parsing spools uploads (tempfile's folder)
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    settings = Settings(
        data_dir=tmp_path / "data",
        model=str(tmp_path / "no-model"),  # never loaded: nothing here reaches a model
        max_request_bytes=CAP,
        max_inflight_body_bytes=BUDGET,
        read_access="key",
    )
    catalog = open_catalog(settings.catalog_url())
    keys = {scope: create_key(catalog, scope, scope)[0] for scope in ("read", "write")}
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield port, keys, spool
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def _headers(path: str, extra: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked"]
    lines += ["Content-Type: multipart/form-data; boundary=bnd", *(f"{k}: {v}" for k, v in extra.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict[str, str], dict]:
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        part = sock.recv(65536)
        if not part:
            break
        buf += part
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        part = sock.recv(65536)
        if not part:
            break
        body += part
    return int(lines[0].split()[1]), headers, json.loads(body or b"{}")


def _first_part() -> bytes:
    return b'--bnd\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'


def _spooled(folder: Path) -> int:
    total = 0
    for p in folder.iterdir():
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def test_keyless_chunked_upload_is_refused_before_its_body_is_read(server):
    port, keys, _ = server
    for path, auth in [
        ("/v1/collections/c/images", {}),  # writes always need a key
        ("/v1/collections/c/images", {"Authorization": f"Bearer {keys['read']}"}),  # a read key cannot write
        ("/v1/search/image", {}),  # reads need one too in key mode
        ("/v1/collections/c/images", {"Authorization": "Bearer bsk_nope_nope"}),
    ]:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(_headers(path, auth))  # headers only: not one byte of the body is sent
            status, headers, body = _response(sock, timeout=10)
            assert status in (401, 403), body
            assert headers["content-type"].startswith("application/problem+json")
            assert body["status"] == status and ("API key" in body["detail"] or "key" in body["detail"].lower())


def test_chunked_body_is_cut_off_at_the_cap(server):
    port, keys, spool = server
    peak = [0]
    stop = threading.Event()

    def watch() -> None:  # the largest amount ever spooled to temporary files
        while not stop.is_set():
            peak[0] = max(peak[0], _spooled(spool))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_headers("/v1/collections/c/images", {"Authorization": f"Bearer {keys['write']}"}))
        sock.sendall(_chunk(_first_part()))
        block = _chunk(b"\x89PNG" + b"\0" * (64 * 1024 - 4))
        answered = False
        try:
            while sent < 64 * CAP:  # far more than the cap, unless the server answers first
                sock.sendall(block)
                sent += len(block)
                if select.select([sock], [], [], 0)[0]:
                    answered = True
                    break
        except (BrokenPipeError, ConnectionResetError):
            answered = True
        assert answered, "the server read the whole oversized body without answering"
        status, _, body = _response(sock)
    stop.set()
    watcher.join()
    assert status == 413 and body["code"] == "payload_too_large", body
    assert sent < 64 * CAP
    assert peak[0] <= CAP + 64 * 1024, f"spooled {peak[0]} bytes for a {CAP}-byte cap"


def test_bodies_in_flight_share_one_budget(server):
    port, keys, _ = server
    auth = {"Authorization": f"Bearer {keys['write']}"}
    part = _chunk(b"\0" * (900 * 1024))  # under the per-request cap; two are over the budget
    with socket.create_connection(("127.0.0.1", port)) as first:
        first.sendall(_headers("/v1/collections/c/images", auth) + _chunk(_first_part()) + part)
        time.sleep(1.0)  # the server has read the first body's bytes and waits for more
        with socket.create_connection(("127.0.0.1", port)) as second:
            second.sendall(_headers("/v1/collections/c/images", auth) + _chunk(_first_part()) + part)
            status, headers, body = _response(second)
            assert status == 503 and int(headers["retry-after"]) >= 1, body
        first.sendall(b"0\r\n\r\n")  # the first request ends (a bad multipart body: 4xx, not 5xx)
        status, _, _ = _response(first)
        assert 400 <= status < 500
    # the budget is free again once the requests are over
    with socket.create_connection(("127.0.0.1", port)) as third:
        third.sendall(_headers("/v1/collections/c/images", auth) + _chunk(_first_part()) + part + b"0\r\n\r\n")
        status, _, _ = _response(third)
        assert status != 503
