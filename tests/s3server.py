"""A real S3 API on loopback for the tests: moto's server (``ThreadedMotoServer``), started once
per session like the PostgreSQL one, reached through s3fs/botocore exactly as a real store is.

The fixture sets the standard AWS credential variables (dummy values moto accepts, with a
recognisable secret the tests look for in every output) and ``BLIPSEARCH_S3_ENDPOINT_URL``.
"""

from __future__ import annotations

import logging
import os
import socket
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

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

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
