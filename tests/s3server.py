"""A real S3 API on loopback for the tests: moto's server (``ThreadedMotoServer``), started once
per session like the PostgreSQL one, reached through s3fs/botocore exactly as a real store is.

The fixture sets the standard AWS credential variables (dummy values moto accepts, with a
recognisable secret the tests look for in every output) and ``BLIPSEARCH_S3_ENDPOINT_URL``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

SECRET = "sEcReT-do-not-print-0123456789abcdef"
KEY_ID = "AKIATESTKEYID000001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3:
    endpoint: str
    server: Any
    port: int
    _client: Any = None

    def client(self) -> Any:
        """A boto3 client with the fixture's credentials (one per server: making one is slow)."""
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")
        return self._client

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, skip_instance_cache=True)


ENV = {
    "AWS_ACCESS_KEY_ID": KEY_ID,
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_DEFAULT_REGION": "us-east-1",
    "BLIPSEARCH_OBJECT_RETRIES": "1",
    "BLIPSEARCH_OBJECT_TIMEOUT_S": "5",
}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3]:
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*ENV, "BLIPSEARCH_S3_ENDPOINT_URL"]}
    os.environ.update({**ENV, "BLIPSEARCH_S3_ENDPOINT_URL": endpoint})
    try:
        yield S3(endpoint, server, port)
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3(s3_server: S3) -> S3:
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()  # listings are cached per instance
    return s3_server


class Outage:
    """A TCP relay in front of the S3 server, on its own port: ``kill()`` drops the listener
    and every open connection at once (a store that dies, as clients see it: keep-alive
    connections included), ``start()`` brings it back on the same port over the same store."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Outage:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        return self

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(1 << 16):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def kill(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept loop
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
