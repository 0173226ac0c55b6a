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

from tests.helpers import probe_cli

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "faiss", "ray", "openvino", "pyarrow", "fastapi", "sqlalchemy")


def _run(args: list[str], env: dict[str, str]) -> tuple[int, set[str], str]:
    """Run the CLI with ``args`` in a fresh interpreter; (exit code, imported modules, stdout)."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **env}
    code, modules, out, _ = probe_cli(args, full)
    return code, modules, out


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
    # shard records are read without pyarrow.dataset (storage/reading.py), and OpenVINO loads
    # without its usage telemetry (models/openvino_query.import_openvino)
    assert "pyarrow.dataset" not in modules and "openvino_telemetry" not in _tops(modules)
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


APP_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import api.app
print("@@" + json.dumps(sorted(sys.modules)))
"""


def test_the_api_module_imports_no_model_stack():
    """``serve`` imports the app before it loads anything: torch, transformers, OpenVINO and
    FAISS load only with what needs them (the routes import the indexing and moderation stacks
    inside their handlers)."""
    proc = subprocess.run(
        [sys.executable, "-c", APP_PROBE, str(ROOT)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    modules = set(json.loads(proc.stdout.rpartition("@@")[2]))
    heavy = _tops(modules) & {"torch", "transformers", "openvino", "faiss", "ray"}
    assert not heavy, sorted(heavy)


def test_openvino_is_imported_without_its_telemetry():
    """``import openvino`` would send an analytics event from a forked process; blipsearch's
    import refuses the optional telemetry package, and the converter still works."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from models.openvino_query import import_openvino\n"
        "ov = import_openvino()\n"
        "import openvino.tools.ovc.telemetry_utils as t\n"
        "print(callable(ov.convert_model), 'openvino_telemetry' in sys.modules, t.tm.__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False", "openvino.tools.ovc.telemetry_stub"]


SERVE_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from fastapi.testclient import TestClient
from api.app import create_app
from blipsearch.config import Settings
app = create_app(Settings(), warm=True)
with TestClient(app) as client:
    warmed = sorted(sys.modules)
    r = client.post("/v1/search/text", json={"query": sys.argv[2], "collection": "c", "k": 6})
    after = sorted(sys.modules)
print("@@" + json.dumps({"status": r.status_code, "body": r.json(), "warmed": warmed, "after": after}))
"""


def test_a_warmed_server_answers_text_from_the_recorded_tower(ov_collection):
    """``serve`` warms each collection on its query embedder: with a query record, neither the
    warm-up nor a first text search loads torch or the checkpoint (so /readyz comes quickly and
    the first query is fast), and the results equal the full model's."""
    from search.engine import SearchEngine
    from storage.collection import Collection

    env, _, s, full = ov_collection
    proc = subprocess.run(
        [sys.executable, "-c", SERVE_PROBE, str(ROOT), QUERY], capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **env},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.rpartition("@@")[2])
    assert info["status"] == 200, info["body"]
    for phase in ("warmed", "after"):
        loaded = _tops(set(info[phase])) & {"torch", "transformers"}
        assert not loaded, (phase, sorted(loaded))
    ref = SearchEngine.open(Collection.open(s.data_dir, "c"), full).search_text(QUERY, k=6)
    got = [(r["id"], r["score"]) for r in info["body"]["results"]]
    assert [i for i, _ in got] == [h.id for h in ref.hits]
    assert max(abs(x - h.score) for (_, x), h in zip(got, ref.hits, strict=True)) < 1e-6


def test_a_served_engine_loads_its_itm_head_on_the_first_reranked_query(ov_collection):
    """The served engine's own re-ranker is lazy: not loaded by the warm-up or a plain search,
    loaded by the first re-ranked one, whose ITM scores equal an eagerly built engine's."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from models.openvino_query import OpenVinoQueryEmbedder
    from rerank.lazy import LazyReranker
    from service.engines import open_engine

    _, _, s, _ = ov_collection
    app = create_app(s, warm=True)
    with TestClient(app) as client:
        engine = app.state.blip.engines()["c"]
        assert isinstance(engine.embedder, OpenVinoQueryEmbedder) and engine.embedder._full is None
        assert isinstance(engine.reranker, LazyReranker) and not engine.reranker.is_loaded
        body = {"query": QUERY, "collection": "c", "k": 4}
        assert client.post("/v1/search/text", json=body).status_code == 200
        assert not engine.reranker.is_loaded
        r = client.post("/v1/search/text", json={**body, "rerank": True, "rerank_k": 6})
        assert r.status_code == 200, r.text
        assert engine.reranker.is_loaded and engine.embedder._full is not None
        got = {h["id"]: h["itm_score"] for h in r.json()["results"]}
    eager = open_engine(s, "c", rerank=True)
    ref = eager.search_text(QUERY, k=4, rerank=True, rerank_k=6)
    assert list(got) == [h.id for h in ref.hits]
    assert max(abs(got[h.id] - h.itm_score) for h in ref.hits) < 1e-4
