"""Upload images one request each through the API (in this process, small-shard merging on),
appending the sha256 of every acknowledged upload to ACK_FILE (fsynced) as its answer arrives.
Run by tests/test_faults_kill.py: ``python -m tests.fault_upload_driver DATA_DIR IMAGE_DIR ACK_FILE``."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from blipsearch.config import get_settings
from storage.api_keys import create_key
from storage.catalog import open_catalog


def main(data_dir: str, image_dir: str, ack_file: str) -> None:
    settings = get_settings(data_dir=Path(data_dir), merge_small_shards=True, small_shard_rows=4)
    key = create_key(open_catalog(settings.catalog_url()), "fault-driver", "write")[0]
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings), raise_server_exceptions=True) as client, open(ack_file, "a") as ack:
        if client.get("/v1/collections/u").status_code == 404:
            r = client.post("/v1/collections", json={"name": "u"}, headers=auth)
            assert r.status_code in (200, 201, 409), r.text
        for path in sorted(Path(image_dir).iterdir()):
            data = path.read_bytes()
            r = client.post("/v1/collections/u/images", files=[("files", (path.name, data))], headers=auth)
            assert r.status_code == 200, r.text
            body = r.json()
            assert not body["failures"], body
            if body["added"] or body["duplicates"]:
                ack.write(hashlib.sha256(data).hexdigest() + "\n")
                ack.flush()
                os.fsync(ack.fileno())


if __name__ == "__main__":
    main(*sys.argv[1:4])
