"""Start-up: what a command imports and loads (not how long it takes).

``blipsearch --help`` and ``import cli.main`` load no model stack; ``search`` without
``--rerank`` loads neither the ITM nor the captioner stack; a text search on a collection whose
text tower already ran on OpenVINO answers from the recorded tower (models/openvino_query.py)
without importing torch or transformers, with the same results as the full model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "faiss", "ray", "openvino", "pyarrow", "fastapi", "sqlalchemy")
PROBE = """
import json, runpy, sys
sys.argv = ["blipsearch", *json.loads(sys.argv[1])]
try:
    runpy.run_module("cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("\\n@@" + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _run(args: list[str], env: dict[str, str]) -> tuple[int, set[str], str]:
    """Run the CLI with ``args`` in a fresh interpreter; (exit code, imported modules, stdout)."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **env}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, env=full, timeout=600
    )
    out, _, tail = proc.stdout.rpartition("\n@@")
    assert tail, proc.stderr
    info = json.loads(tail)
    return int(info["code"] or 0), set(info["modules"]), out


def _tops(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_help_and_cli_import_load_no_heavy_package():
    code, modules, out = _run(["--help"], {})
    assert code == 0 and "search" in out
    assert not _tops(modules) & set(HEAVY), sorted(_tops(modules) & set(HEAVY))
    assert "blipsearch.config" not in modules  # settings are read when a command runs
    code, modules, out = _run(["search", "--help"], {})
    assert code == 0 and "--rerank" in out
    assert not _tops(modules) & set(HEAVY)


@pytest.fixture(scope="module")
def ov_collection(tiny_models, tmp_path_factory):
    """A collection indexed in fast mode on OpenVINO, and the env that searches it."""
    from tests.helpers import write_images

    tmp = tmp_path_factory.mktemp("cold")
    write_images(tmp / "imgs", 6)
    env = {
        "BLIPSEARCH_DATA_DIR": str(tmp / "data"),
        "BLIPSEARCH_MODEL": str(tiny_models["blip-itm"]),
        "BLIPSEARCH_PRECISION": "fast",
        "BLIPSEARCH_FAST_RUNTIME": "openvino",
        "BLIPSEARCH_JPEG_DRAFT": "false",
    }
    code, _, out = _run(["index", str(tmp / "imgs"), "-c", "c", "--json"], env)
    assert code == 0, out
    return env, tmp


def _hits(out: str) -> list[tuple[int, float]]:
    return [(r["id"], r["score"]) for r in json.loads(out)["results"]]


def test_text_search_runs_on_the_recorded_tower_without_torch(ov_collection):
    env, tmp = ov_collection
    query = ["search", "a red square on a blue field", "-c", "c", "-k", "6", "--json"]
    code, first_modules, first = _run(query, env)  # the full model; writes the query record
    assert code == 0, first
    assert "torch" in first_modules
    assert list((tmp / "data" / "cache" / "openvino-query").glob("*.json"))
    code, modules, second = _run(query, env)
    assert code == 0, second
    assert not _tops(modules) & {"torch", "transformers"}, sorted(_tops(modules) & {"torch", "transformers"})
    assert "models.openvino_query" in modules
    a, b = _hits(first), _hits(second)
    assert [i for i, _ in a] == [i for i, _ in b] and len(a) == 6
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) < 1e-6
    # Another text pre-processing is another key: the full model loads again.
    code, modules, _ = _run(query, {**env, "BLIPSEARCH_TEXT_PREPROCESS": "none"})
    assert code == 0 and "torch" in modules


def test_search_loads_no_itm_or_captioner_stack(ov_collection):
    env, _ = ov_collection
    code, modules, out = _run(["search", "a circle", "-c", "c", "--json"], {**env, "BLIPSEARCH_FAST_RUNTIME": "torch"})
    assert code == 0, out
    assert "torch" in modules  # this runtime has no recorded tower: the full embedder
    loaded = {m for m in modules if m.startswith(("models.captioners", "rerank.itm", "rerank.image_tokens"))}
    assert not loaded and "models.blip_itm" not in modules, sorted(loaded)


def test_an_image_query_on_the_query_embedder_loads_the_full_model(ov_collection, tiny_models):
    """Anything but a text goes to the full embedder, loaded on first use (same vectors)."""
    from models import load_embedder
    from models.openvino_query import OpenVinoQueryEmbedder
    from models.options import EmbedderOptions
    from service.models import load_query_model
    from tests.helpers import write_images

    env, tmp = ov_collection
    from blipsearch.config import Settings

    s = Settings(data_dir=Path(env["BLIPSEARCH_DATA_DIR"]), precision="fast", fast_runtime="openvino")
    model = str(tiny_models["blip-itm"])
    q = load_query_model(s, model)
    assert isinstance(q, OpenVinoQueryEmbedder) and q._full is None
    full = load_embedder(model, EmbedderOptions.from_settings(s))
    texts = ["two dogs", "a red circle " * 40, "", "Ünïcode, punctuation!?"]
    np_q, np_f = q.embed_texts(texts), full.embed_texts(texts)
    assert np_q.shape == np_f.shape and float(abs(np_q - np_f).max()) < 1e-6
    assert (q.fingerprint, q.model_id, q.dim) == (full.fingerprint, full.model_id, full.dim)
    from PIL import Image

    write_images(tmp / "one", 1)
    img = Image.open(next((tmp / "one").iterdir())).convert("RGB")
    got = q.embed_images([img])
    assert q._full is not None
    assert float(abs(got - full.embed_images([img])).max()) < 1e-5


def test_serve_warms_the_engines_before_it_answers(ov_collection):
    """``warm``: the collections' engines are loaded during start-up, before any request;
    without it (the default outside ``serve``) nothing loads until a request needs it."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from blipsearch.config import Settings

    env, _ = ov_collection
    s = Settings(data_dir=Path(env["BLIPSEARCH_DATA_DIR"]), precision="fast", fast_runtime="openvino")
    cold = create_app(s)
    with TestClient(cold):
        assert cold.state.blip.engines() == {}
    warm = create_app(s, warm=True)
    with TestClient(warm) as client:
        assert sorted(warm.state.blip.engines()) == ["c"]
        ready = client.get("/readyz").json()
        assert ready["detail"]["collections"] == ["c"]
