"""Weights load from a local directory offline, and every failure is one actionable error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from blipsearch.errors import ModelLoadError
from models import load_embedder


def test_local_directory_loads_offline(tiny_models, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = load_embedder(str(tiny_models["blip-itm"]), device="cpu")
    assert emb.family == "blip" and emb.dim == 256 and emb.vectors_per_image == 1
    emb2 = load_embedder(str(tiny_models["blip2-itm"]), device="cpu")
    assert emb2.family == "blip2" and emb2.vectors_per_image == 32


def test_missing_local_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist") as err:
        load_embedder(str(tmp_path / "nope" / "blip"), device="cpu")
    assert "--model" in str(err.value)


def test_hub_id_offline_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError) as err:
        load_embedder("Salesforce/blip-itm-base-coco", device="cpu")
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and "--model" in msg and "BLIPSEARCH_MODEL" in msg
    assert "huggingface-cli download Salesforce/blip-itm-base-coco" in msg


def test_directory_without_config(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        load_embedder(str(tmp_path), device="cpu")


def test_not_a_blip_model(tiny_models, tmp_path):
    import json
    import shutil

    d = tmp_path / "bert"
    shutil.copytree(tiny_models["blip-itm"], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "bert"
    cfg.pop("architectures", None)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError):
        load_embedder(str(d), device="cpu")


def test_cli_reports_missing_model_without_traceback(tmp_path):
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "BLIPSEARCH_DATA_DIR": str(tmp_path / "d"),
        "PATH": "/usr/bin:/bin",
    }
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    from tests.helpers import make_image

    make_image(0).save(img_dir / "a.jpg")
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "index", str(img_dir), "-c", "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == ModelLoadError.exit_code
    assert "Traceback" not in proc.stderr
    assert "error: Could not load" in proc.stderr and "--model" in proc.stderr
