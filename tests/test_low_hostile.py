"""Hostile inputs that used to answer 500, give a traceback or a wrong answer: caption lengths
past the decoder's positions, unwritable outputs, bad index specs, ``#`` in tar member names,
directory-symlink loops in globs."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from blipsearch.config import Settings
from tests.helpers import make_image


def _png() -> bytes:
    buf = io.BytesIO()
    make_image(1).save(buf, "PNG")
    return buf.getvalue()


def test_caption_longer_than_the_decoder_positions_is_422(tmp_path, tiny_models):
    settings = Settings(data_dir=tmp_path / "data", caption_model=str(tiny_models["blip-caption"]))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post("/v1/captions", files={"file": ("x.png", _png(), "image/png")}, data={"max_new_tokens": "500"})
        assert r.status_code == 422 and "64 positions" in r.json()["detail"], r.text
        ok = client.post("/v1/captions", files={"file": ("x.png", _png(), "image/png")}, data={"max_new_tokens": "4"})
        assert ok.status_code == 200, ok.text


def test_caption_cli_names_the_limit(tmp_path, tiny_models, monkeypatch):
    from cli.main import app

    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    make_image(1).save(tmp_path / "a.png")
    args = ["caption", str(tmp_path / "a.png"), "--caption-model", str(tiny_models["blip-caption"])]
    r = CliRunner().invoke(app, [*args, "--max-new-tokens", "500"])
    assert r.exit_code == 2 and "--max-new-tokens" in r.output and "64 positions" in r.output, r.output
    assert "Traceback" not in r.output


def test_embed_to_an_unwritable_output_is_one_line(tmp_path, tiny_models, monkeypatch):
    from cli.main import app

    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    r = CliRunner().invoke(app, ["embed", "--text", "a cat", "--model", str(tiny_models["blip-itm"]), "-o", "/proc/x"])
    assert r.exit_code == 2 and "Cannot write --output /proc/x" in r.output and "Traceback" not in r.output, r.output


@pytest.mark.parametrize("spec", ["HNSW0", "HNSW1", "IVF4_HNSW0,Flat", "RR0,Flat", "PQ4x0", "NSG32", "IVF0,Flat", ""])
def test_bad_index_specs_are_refused_before_faiss(spec):
    from blipsearch.errors import InvalidInputError
    from search.faiss_backend import new_index

    with pytest.raises(InvalidInputError, match="Invalid FAISS index spec"):
        new_index(spec, 16)


@pytest.mark.parametrize("spec", ["Flat", "HNSW32", "IVF4,Flat", "IVF2,PQ4x2", "OPQ4_16,IVF4,PQ4", "IVF4_HNSW8,SQ8"])
def test_good_index_specs_still_build(spec):
    from search.faiss_backend import new_index

    assert new_index(spec, 16).d == 16


def test_reindex_with_a_spec_that_aborts_faiss_exits_2(tmp_path, blip_embedder, tiny_models):
    import os
    import subprocess
    import sys

    from service.indexing import index_paths
    from tests.helpers import write_images

    settings = Settings(data_dir=tmp_path / "data", model=str(tiny_models["blip-itm"]))
    write_images(tmp_path / "imgs", 3)
    index_paths(settings, [tmp_path / "imgs"], "p", embedder=blip_embedder, progress=False)
    env = {**os.environ, "BLIPSEARCH_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "cli", "reindex", "-c", "p", "--index-spec", "HNSW0"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "HNSW M must be 2..256" in r.stderr, (r.returncode, r.stderr[-2000:])


def _tar(path, members: dict[str, bytes]) -> None:
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_tar_members_with_hash_and_percent_in_their_names_read_back(tmp_path):
    import hashlib

    from indexer.sources.webdataset import WebDatasetSource
    from media.safe_read import read_verified

    png = _png()
    shard = tmp_path / "s.tar"
    _tar(shard, {"a#1.png": png, "b%23.png": png + b"\0", "c%zz.png": png + b"\0\0"})
    items = list(WebDatasetSource(shard))
    assert len(items) == 3 and all(it.error is None for it in items)
    for it in items:
        assert it.uri.rpartition("#")[0] == str(shard.resolve())
        assert read_verified(it.uri, hashlib.sha256(it.data).hexdigest(), 1 << 20) == it.data
    # A uri stored before member names were encoded still reads its raw member.
    old = f"{shard.resolve()}#b%23.png"
    assert read_verified(old, hashlib.sha256(png + b"\0").hexdigest(), 1 << 20) == png + b"\0"


def test_a_glob_over_symlink_loops_finishes(tmp_path):
    from indexer.sources.files import expand_glob

    (tmp_path / "a" / "b").mkdir(parents=True)
    make_image(1).save(tmp_path / "a" / "b" / "x.png")
    make_image(2).save(tmp_path / "top.png")
    (tmp_path / ".hidden").mkdir()
    make_image(3).save(tmp_path / ".hidden" / "h.png")
    (tmp_path / "a" / "b" / "loop1").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "loop2").symlink_to(tmp_path)
    got = expand_glob(str(tmp_path / "**" / "*.png"))
    assert got == [tmp_path / "a" / "b" / "x.png", tmp_path / "top.png"]
