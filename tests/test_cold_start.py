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
    """A collection indexed in fast mode on OpenVINO (in this process), one text query run on
    the full embedder (which writes the query record), and the env that searches it."""
    from blipsearch.config import Settings
    from service.indexing import index_paths
    from service.models import load_model
    from tests.helpers import write_images

    tmp = tmp_path_factory.mktemp("cold")
    write_images(tmp / "imgs", 6)
    model = str(tiny_models["blip-itm"])
    s = Settings(data_dir=tmp / "data", precision="fast", fast_runtime="openvino", jpeg_draft=False, model=model)
    full = load_model(s, model)
    index_paths(s, [tmp / "imgs"], "c", embedder=full, progress=False)
    env = {
        "BLIPSEARCH_DATA_DIR": str(tmp / "data"),
        "BLIPSEARCH_MODEL": model,
        "BLIPSEARCH_PRECISION": "fast",
        "BLIPSEARCH_FAST_RUNTIME": "openvino",
        "BLIPSEARCH_JPEG_DRAFT": "false",
    }
    return env, tmp, s, full


QUERY = "a red square on a blue field"


def _hits(out: str) -> list[tuple[int, float]]:
    return [(r["id"], r["score"]) for r in json.loads(out)["results"]]


def test_text_search_runs_on_the_recorded_tower_without_torch(ov_collection):
    from search.engine import SearchEngine
    from storage.collection import Collection

    env, tmp, s, full = ov_collection
    ref = SearchEngine.open(Collection.open(s.data_dir, "c"), full).search_text(QUERY, k=6)
    assert list((tmp / "data" / "cache" / "openvino-query").glob("*.json"))  # written by that query
    code, modules, out = _run(["search", QUERY, "-c", "c", "-k", "6", "--json"], env)
    assert code == 0, out
    assert not _tops(modules) & {"torch", "transformers"}, sorted(_tops(modules) & {"torch", "transformers"})
    assert "models.openvino_query" in modules
    got = _hits(out)
    assert [i for i, _ in got] == [h.id for h in ref.hits] and len(got) == 6
    assert max(abs(x - h.score) for (_, x), h in zip(got, ref.hits, strict=True)) < 1e-6


def test_the_record_applies_only_to_the_same_settings(ov_collection, tiny_models):
    from models.openvino_query import OpenVinoQueryEmbedder
    from service.models import load_query_model

    _, _, s, _ = ov_collection
    model = str(tiny_models["blip-itm"])
    assert isinstance(load_query_model(s, model), OpenVinoQueryEmbedder)
    for other in ({"text_preprocess": "none"}, {"batch_size": 3}, {"fast_runtime": "torch"}, {"precision": "exact"}):
        assert not isinstance(load_query_model(s.model_copy(update=other), model), OpenVinoQueryEmbedder), other


@pytest.mark.slow
def test_search_loads_no_itm_or_captioner_stack(ov_collection):
    env = ov_collection[0]
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

    _, tmp, s, _ = ov_collection
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

    s = ov_collection[2]
    cold = create_app(s)
    with TestClient(cold):
        assert cold.state.blip.engines() == {}
    warm = create_app(s, warm=True)
    with TestClient(warm) as client:
        assert sorted(warm.state.blip.engines()) == ["c"]
        ready = client.get("/readyz").json()
        assert ready["detail"]["collections"] == ["c"]
