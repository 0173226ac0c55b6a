"""A full disk (or database) is a storage problem: 507 ``storage_full`` from the API, one line
and exit 6 from the CLI, never a 500 or a traceback; a cache that cannot be written never fails
a query. (The real full tmpfs run is in tests/test_faults_disk.py.)"""

from __future__ import annotations

import errno
import io
import sqlite3
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import typer
from fastapi.testclient import TestClient

from api.app import create_app
from blipsearch.errors import StorageFullError
from cli.common import handle_errors
from models.openvino_runtime import OpenVinoTowers
from service.indexing import index_paths
from storage.api_keys import create_key
from storage.atomic import atomic_write_with
from storage.catalog import open_catalog
from storage.collection import Collection
from tests.helpers import make_image, write_images


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_write_on_a_full_disk_is_a_storage_error(tmp_path):
    with pytest.raises(StorageFullError, match="full") as info:
        atomic_write_with(tmp_path / "f", _enospc)
    assert info.value.exit_code == 6 and info.value.http_status == 507
    assert list(tmp_path.iterdir()) == []  # no temp file left


def test_upload_on_a_full_disk_answers_507(settings, blip_embedder, tmp_path, monkeypatch):
    s = settings.model_copy(update={"model": str(blip_embedder.model_id)})
    index_paths(s, [write_images(tmp_path / "in", 2)[0].parent], "u", embedder=blip_embedder, progress=False)
    key = create_key(open_catalog(s.catalog_url()), "w", "write")[0]
    app = create_app(s)
    app.state.blip._embedders[blip_embedder.model_id] = blip_embedder
    buf = io.BytesIO()
    make_image(7).save(buf, "PNG")
    with TestClient(app, raise_server_exceptions=False) as client:
        monkeypatch.setattr(pq, "write_table", _enospc)
        r = client.post(
            "/v1/collections/u/images",
            files=[("files", ("a.png", buf.getvalue(), "image/png"))],
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 507 and r.json()["code"] == "storage_full", r.text
        monkeypatch.undo()
    assert Collection.open(s.data_dir, "u").manifest.count == 2  # nothing half committed


@pytest.mark.parametrize(
    "exc",
    [sqlite3.OperationalError("database or disk is full"), OSError("Failed to write: No space left on device")],
)
def test_cli_reports_a_full_disk_in_one_line_exit_6(exc, capsys):
    @handle_errors
    def command() -> None:
        raise exc

    with pytest.raises(typer.Exit) as info:
        command()
    assert info.value.exit_code == 6
    err = capsys.readouterr().err
    assert err.startswith("error: The disk or database is full") and err.count("\n") == 1


def test_an_unwritable_runtime_cache_never_fails_the_model(tmp_path):
    def save_model(*_a, **_k):
        raise RuntimeError("Exception from src/core/src/pass/serialize.cpp: No space left on device")

    towers = object.__new__(OpenVinoTowers)
    assert towers._store(SimpleNamespace(save_model=save_model), object(), tmp_path / "ir") is False
    assert list(tmp_path.iterdir()) == []
