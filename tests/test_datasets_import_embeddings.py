"""``blipsearch import-embeddings``: clip-retrieval's clip_inference layout and Parquet vector
columns, checked against the named model (dimension, re-embedded sample) before any write."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.main import app
from indexer.decode_pool import DecodeConfig, decode_one
from storage.collection import Collection
from tests.helpers import write_images


@pytest.fixture
def cli(tmp_path, monkeypatch, tiny_models):
    monkeypatch.setenv("BLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BLIPSEARCH_MODEL", str(tiny_models["blip-itm"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BLIPSEARCH_JPEG_DRAFT", "0")

    def run(*args: str, code: int = 0) -> dict:
        result = CliRunner().invoke(app, list(args))
        out = result.stdout + (result.stderr or "")
        assert result.exit_code == code, out
        return json.loads(result.stdout) if "--json" in args and code == 0 else {"output": out}

    return run


def _clip_inference(root, paths, vectors, per_file: int) -> None:
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    for f, start in enumerate(range(0, len(paths), per_file)):
        np.save(root / "img_emb" / f"img_emb_{f}.npy", vectors[start : start + per_file].astype(np.float16))
        rows = {"image_path": [str(p) for p in paths[start : start + per_file]]}
        rows["caption"] = [f"caption {i}" for i in range(start, start + len(rows["image_path"]))]
        pq.write_table(pa.table(rows), root / "metadata" / f"metadata_{f}.parquet")


def test_clip_inference_output_is_checked_and_imported(cli, tmp_path, tiny_models, blip_embedder):
    paths = write_images(tmp_path / "imgs", 7)
    cfg = DecodeConfig(blip_embedder.preprocessor(), None, 10**8, None)
    vectors = blip_embedder.embed_pixels(np.stack([decode_one(cfg, p.read_bytes()).pixels for p in paths]))
    model = str(tiny_models["blip-itm"])
    _clip_inference(tmp_path / "out", paths, vectors, per_file=3)  # img_emb_0..2, fp16 like clip-retrieval's

    out = cli("import-embeddings", "-c", "imp", "--embeddings", str(tmp_path / "out"), "--model", model, "--json")
    assert (out["added"], out["rows"], out["files"]) == (7, 7, 3)
    assert out["check"]["checked"] >= 3 and out["check"]["min_cosine"] > 0.999
    coll = Collection.open(tmp_path / "data", "imp")
    rows = {r["uri"]: r for r in coll.read_table().to_pylist()}
    assert set(rows) == {str(p) for p in paths}
    assert json.loads(rows[str(paths[4])]["metadata"]) == {"caption": "caption 4"}
    np.testing.assert_allclose(np.asarray(rows[str(paths[4])]["embedding"]), vectors[4], atol=2e-3)
    # The images resolve: their sha256 is the content hash, so indexing them now skips all of them.
    idx = cli("index", str(tmp_path / "imgs"), "-c", "imp", "--json")
    assert (idx["added"], idx["skipped_duplicates"]) == (0, 7)
    res = cli("search", "--image", str(paths[2]), "-c", "imp", "-k", "1", "--json")
    assert res["results"][0]["uri"] == str(paths[2].resolve())
    again = cli("import-embeddings", "-c", "imp", "--embeddings", str(tmp_path / "out"), "--model", model, "--json")
    assert (again["added"], again["skipped_duplicates"]) == (0, 7)

    # Vectors from another model (same dimension) are refused with the numbers; nothing is written.
    other = np.random.default_rng(0).standard_normal(vectors.shape).astype(np.float32)
    _clip_inference(tmp_path / "wrong", paths, other, per_file=7)
    bad = cli("import-embeddings", "-c", "imp2", "--embeddings", str(tmp_path / "wrong"), "--model", model, code=2)
    assert "do not match" in bad["output"] and "min" in bad["output"] and "Traceback" not in bad["output"]
    assert (
        not Collection.exists(tmp_path / "data", "imp2")
        or Collection.open(tmp_path / "data", "imp2").manifest.count == 0
    )
    # Another dimension: refused before anything is read.
    _clip_inference(tmp_path / "dim", paths, np.ones((7, 5), np.float32), per_file=7)
    bad = cli("import-embeddings", "-c", "imp3", "--embeddings", str(tmp_path / "dim"), "--model", model, code=2)
    assert "dimension" in bad["output"]


def test_parquet_vector_columns_need_a_check_or_an_explicit_waiver(cli, tmp_path, tiny_models, blip_embedder):
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((4, blip_embedder.dim)).astype(np.float32)
    table = pa.table(
        {
            "url": [f"https://example.com/{i}.jpg" for i in range(4)],
            "embedding": vecs.tolist(),
            "label": ["a", "b", "c", "d"],
        }
    )
    (tmp_path / "emb").mkdir()
    pq.write_table(table, tmp_path / "emb" / "part-0.parquet")
    model = str(tiny_models["blip-itm"])
    refused = cli("import-embeddings", "-c", "pq", "--embeddings", str(tmp_path / "emb"), "--model", model, code=2)
    assert "--allow-unverified" in refused["output"]
    out = cli(
        "import-embeddings",
        "-c",
        "pq",
        "--embeddings",
        str(tmp_path / "emb"),
        "--model",
        model,
        "--allow-unverified",
        "--json",
    )
    assert out["added"] == 4 and out["check"] == {"checked": 0} and out["normalized"] == 4
    rows = Collection.open(tmp_path / "data", "pq").read_table().to_pylist()
    assert all(r["sha256"].startswith("uri:") for r in rows)
    assert {json.loads(r["metadata"])["label"] for r in rows} == {"a", "b", "c", "d"}
    np.testing.assert_allclose(np.linalg.norm(np.asarray([r["embedding"] for r in rows]), axis=1), 1.0, atol=1e-5)
