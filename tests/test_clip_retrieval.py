"""clip-retrieval's back-end protocol, driven over real HTTP by the unmodified ``ClipClient`` of the
``clip-retrieval`` package (its clip_client.py, loaded alone: the package's __init__ imports the
whole clip_back stack, which ``pip install --no-deps clip-retrieval`` does not bring)."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import requests
from PIL import Image

from api.app import create_app
from blipsearch.config import Settings
from indexer.texts import index_texts
from moderation.checks import CheckResult
from moderation.policy import parse_policy
from moderation.store import save_results
from search import dedup
from service.indexing import index_paths
from storage.catalog import open_catalog
from storage.collection import Collection
from tests.helpers import make_image, write_images

FRONT = "http://front.example"


def load_clip_client() -> ModuleType:
    spec = importlib.util.find_spec("clip_retrieval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("clip-retrieval is not installed: pip install --no-deps clip-retrieval==2.45.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "clip_client.py"
    mod_spec = importlib.util.spec_from_file_location("clip_retrieval_clip_client", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(tmp_path_factory, blip_embedder, tiny_models):
    """A live server (uvicorn on 127.0.0.1) over: photos (12 images + a near-copy of image 3,
    captions set, one record flagged, one in review) and a text collection."""
    import uvicorn

    root = tmp_path_factory.mktemp("clipret")
    settings = Settings(
        data_dir=root / "data",
        model=str(tiny_models["blip-itm"]),
        batch_size=8,
        max_upload_bytes=200_000,
        max_image_pixels=10_000_000,
        cors_origins=[FRONT],
    )
    write_images(root / "imgs", 12)
    src = Image.open(next(iter(sorted((root / "imgs").iterdir()))))
    src.convert("RGB").resize((src.width - 2, src.height - 2)).save(root / "imgs" / "zz_copy.png")
    index_paths(settings, [root / "imgs"], "photos", embedder=blip_embedder, progress=False)
    coll = Collection.open(settings.data_dir, "photos")
    for shard in coll.manifest.shards:
        ids = range(shard.min_id, shard.max_id + 1)
        coll.update_columns(
            shard.file, {i: {"caption": ["red things", "Blue things", "blue things"][i % 3]} for i in ids}
        )
    (root / "texts.csv").write_text("id,text\n" + "".join(f"t{i},caption number {i}\n" for i in range(6)))
    index_texts(settings.data_dir, root / "texts.csv", "notes", blip_embedder, progress=False)
    policy = parse_policy(
        {
            "name": "p",
            "version": 1,
            "categories": [{"name": "x", "prompts": ["x"], "action": "flag", "itc_threshold": 0, "itm_threshold": 0.5}],
        }
    )
    catalog = open_catalog(settings.catalog_url())
    save_results(
        catalog,
        "photos",
        policy,
        {"itc": "m", "itm": "m"},
        [(2, CheckResult("flag", [])), (5, CheckResult("review", []))],
    )
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield {"base": f"http://127.0.0.1:{port}", "root": root, "settings": settings}
    server.should_exit = True
    thread.join(timeout=10)


def _search_text(base: str, text: str, k: int, collection: str = "photos") -> list[dict]:
    r = requests.post(f"{base}/v1/search/text", json={"query": text, "collection": collection, "k": k}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _client(live, **kw):
    ClipClient = load_clip_client().ClipClient
    return ClipClient(url=f"{live['base']}/knn-service", indice_name="photos", **kw)


def test_clip_client_text_query_matches_search_text(live):
    client = _client(live, num_images=6, deduplicate=False, use_safety_model=False, use_violence_detector=False)
    got = client.query(text="a red square")
    want = _search_text(live["base"], "a red square", 6)
    assert [r["id"] for r in got] == [r["id"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert g["similarity"] == pytest.approx(w["score"], abs=1e-5)
        assert g["url"] == f"{live['base']}/v1/collections/photos/images/{g['id']}/file"
        assert g["caption"] == w["caption"]
    first = requests.get(got[0]["url"], timeout=30)
    assert first.status_code == 200 and Image.open(io.BytesIO(first.content)).size


def test_clip_client_image_query_matches_search_image(live):
    path = live["root"] / "query.jpg"
    make_image(7).save(path, "JPEG")
    client = _client(live, num_images=5, deduplicate=False, use_safety_model=False, use_violence_detector=False)
    got = client.query(image=str(path))
    r = requests.post(
        f"{live['base']}/v1/search/image",
        files={"file": ("query.jpg", path.read_bytes(), "image/jpeg")},
        data={"collection": "photos", "k": "5"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    want = r.json()["results"]
    assert [x["id"] for x in got] == [x["id"] for x in want]
    assert [x["similarity"] for x in got] == pytest.approx([x["score"] for x in want], abs=1e-5)
    assert all(x["url"].endswith(f"/images/{x['id']}/file") for x in got)


def _stored(live) -> dict[int, np.ndarray]:
    ids, emb = Collection.open(live["settings"].data_dir, "photos").all_embeddings()
    return dict(zip(ids.tolist(), emb, strict=True))


def test_clip_client_defaults_deduplicate_and_hide_flagged(live):
    """ClipClient's defaults ask for deduplicate + safety: near-copies of a higher-ranked result
    (cosine >= 0.94) and records whose moderation decision is not allow (2: flag, 5: review) go."""
    got = [r["id"] for r in _client(live, num_images=13).query(text="a red square")]
    ranked = [r["id"] for r in _search_text(live["base"], "a red square", 13)]
    assert 2 not in got and 5 not in got
    stored = _stored(live)
    candidates = [i for i in ranked if i not in (2, 5)]
    oracle = _greedy_oracle([stored[i] for i in candidates], 0.94)
    oracle = [candidates[i] for i in oracle]
    assert len(oracle) < len(candidates)  # something was a near-duplicate
    assert got == oracle
    copy = max(stored)  # the near-copy of the first image, indexed last
    first = min(stored)
    assert float(stored[copy] @ stored[first]) >= 0.94
    assert not (copy in got and first in got)  # the planted duplicate pair never both appears


def _greedy_oracle(vectors: list[np.ndarray], threshold: float) -> list[int]:
    """Brute force: keep an item unless its (mean, normalised) vector has cosine >= threshold
    with an item kept before it."""
    units = []
    for v in vectors:
        m = np.asarray(v, np.float64).reshape(-1, np.asarray(v).shape[-1]).mean(axis=0)
        units.append(m / np.linalg.norm(m))
    kept: list[int] = []
    for i, u in enumerate(units):
        if all(float(u @ units[j]) < threshold for j in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("shape", [(60, 16), (40, 4, 16)])
def test_dedup_matches_brute_force(shape):
    rng = np.random.default_rng(len(shape))
    base = rng.normal(size=(shape[0] // 3, *shape[1:])).astype(np.float32)
    noisy = np.concatenate([base, base + 0.05 * rng.normal(size=base.shape), base + 0.6 * rng.normal(size=base.shape)])
    order = rng.permutation(len(noisy))[: shape[0]]
    vecs = noisy[order].astype(np.float32)
    for threshold in (0.5, 0.9, 0.99):
        keep = dedup.keep_mask(vecs, threshold)
        assert np.flatnonzero(keep).tolist() == _greedy_oracle(list(vecs), threshold)
    keep = dedup.keep_mask(vecs, 0.9)
    assert 0 < keep.sum() < len(vecs)
    same = np.stack([vecs[0], vecs[1], vecs[0]])  # an exact copy is dropped even at a threshold near 1
    assert dedup.keep_mask(same, 0.9999).tolist() == [True, True, False]


def test_front_end_request_shape_then_metadata(live):
    base = live["base"]
    body = {
        "text": "a blue circle",
        "image": None,
        "image_url": None,
        "embedding_input": None,
        "modality": "image",
        "num_images": 3,
        "indice_name": "photos",
        "num_result_ids": 9,
        "use_mclip": False,
        "deduplicate": False,
        "use_safety_model": False,
        "use_violence_detector": False,
        "aesthetic_score": "",
        "aesthetic_weight": "0.5",
    }
    headers = {"Content-Type": "text/plain;charset=UTF-8", "Origin": FRONT}
    r = requests.post(f"{base}/knn-service", data=json.dumps(body), headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == FRONT
    rows = r.json()
    assert isinstance(rows, list) and len(rows) == 9
    sims = [x["similarity"] for x in rows]
    assert sims == sorted(sims, reverse=True)
    assert all({"id", "similarity", "url", "caption"} <= x.keys() for x in rows[:3])
    assert all(set(x) == {"id", "similarity"} for x in rows[3:])
    assert [x["id"] for x in rows] == [x["id"] for x in _search_text(base, "a blue circle", 9)]
    rest = [x["id"] for x in rows[3:]]
    m = requests.post(
        f"{base}/metadata", data=json.dumps({"ids": rest, "indice_name": "photos"}), headers=headers, timeout=30
    )
    assert m.status_code == 200 and m.headers["access-control-allow-origin"] == FRONT
    metas = m.json()
    assert [x["id"] for x in metas] == rest
    for x in metas:
        assert x["metadata"]["url"] == f"{base}/v1/collections/photos/images/{x['id']}/file"
        assert x["metadata"]["caption"] == ["red things", "Blue things", "blue things"][x["id"] % 3]
    assert requests.get(f"{base}/indices-list", timeout=10).json() == ["notes", "photos"]


def test_image_as_base64_and_embedding_input(live):
    base = live["base"]
    buf = io.BytesIO()
    make_image(4).save(buf, "PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    by_image = requests.post(
        f"{base}/knn-service", data=json.dumps({"image": b64, "text": "", "indice_name": "photos", "num_images": 4})
    ).json()
    vec = requests.post(f"{base}/v1/embed", json={"texts": ["a green stripe"], "collection": "photos"}).json()
    by_vec = requests.post(
        f"{base}/knn-service",
        data=json.dumps({"embedding_input": vec["embeddings"][0], "indice_name": "photos", "num_images": 4}),
    ).json()
    assert [x["id"] for x in by_vec] == [x["id"] for x in _search_text(base, "a green stripe", 4)]
    assert len(by_image) == 4 and all("url" in x for x in by_image)
    # indice_name null: the first collection of /indices-list ("notes", a text collection)
    first = requests.post(f"{base}/knn-service", data=json.dumps({"image": b64, "num_images": 2})).json()
    assert len(first) == 2 and all(x["caption"].startswith("caption number") and "url" not in x for x in first)


def test_text_modality_searches_captions_and_text_collections(live):
    base = live["base"]
    rows = requests.post(
        f"{base}/knn-service",
        data=json.dumps({"text": "a red square", "modality": "text", "indice_name": "photos", "num_images": 5}),
    ).json()
    # three distinct captions (case-insensitive: "Blue things" == "blue things") -> two results
    assert len(rows) == 2 and len({x["caption"].lower() for x in rows}) == 2
    ranked = _search_text(base, "a red square", 13)
    firsts = []
    for r in ranked:
        if r["caption"].lower() not in {f["caption"].lower() for f in firsts}:
            firsts.append(r)
    assert [x["id"] for x in rows] == [f["id"] for f in firsts]
    notes = requests.post(
        f"{base}/knn-service",
        data=json.dumps({"text": "caption number 3", "modality": "text", "indice_name": "notes", "num_images": 3}),
    ).json()
    assert len(notes) == 3 and all("url" not in x and x["caption"].startswith("caption number") for x in notes)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"image_url": "http://169.254.169.254/latest", "num_images": 3}, 422, "never fetches"),
        ({"text": "x", "image_url": "https://example.com/a.jpg"}, 422, "never fetches"),
        ({"embedding_input": [0.1, 0.2, 0.3], "num_images": 3}, 422, "dimension"),
        ({"num_images": 3}, 422, "one of text"),
        ({"text": "x", "num_images": 0}, 422, ""),
        ({"text": "x", "modality": "audio"}, 422, ""),
        ({"text": "x", "indice_name": "nope"}, 404, ""),
        ({"text": "x", "indice_name": "../etc"}, 422, ""),
        ({"image": "not base64 at all!!", "num_images": 3}, 422, "base64"),
        ({"image": base64.b64encode(b"hello world").decode(), "num_images": 3}, 415, "not an image"),
        ({"text": "x", "aesthetic_score": "high"}, 422, ""),
        ("[1, 2]", 422, "JSON object"),
        ("{not json", 422, "not valid JSON"),
        ("", 422, "empty"),
        ("x" * 2_000_000, 413, ""),
    ],
)
def test_bad_knn_requests_answer_4xx(live, body, status, needle):
    data = body if isinstance(body, str) else json.dumps(body)
    r = requests.post(f"{live['base']}/knn-service", data=data, headers={"Content-Type": "text/plain"}, timeout=30)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert needle in r.json()["detail"]
    if needle == "dimension":
        dim = Collection.open(live["settings"].data_dir, "photos").manifest.dim
        assert str(dim) in r.json()["detail"]


def test_bad_metadata_requests(live):
    base = live["base"]
    assert requests.post(f"{base}/metadata", data="{").status_code == 422
    assert requests.post(f"{base}/metadata", data=json.dumps({"ids": ["a"]})).status_code == 422
    unknown = requests.post(f"{base}/metadata", data=json.dumps({"ids": [0, 99999], "indice_name": "photos"}))
    assert [x["id"] for x in unknown.json()] == [0]


def test_protocol_can_be_turned_off(tmp_path):
    from fastapi.testclient import TestClient

    app = create_app(Settings(data_dir=tmp_path / "data", clip_retrieval_api=False))
    with TestClient(app) as c:
        assert c.get("/indices-list").status_code == 404
        assert c.post("/knn-service", content="{}").status_code == 404
    with TestClient(create_app(Settings(data_dir=tmp_path / "data"))) as c:
        assert c.get("/indices-list").json() == []


@pytest.mark.slow
def test_blipsearch_serve_answers_the_clip_client(live):
    """``blipsearch serve`` (a subprocess, settings from the environment) mounts the protocol."""
    port = _free_port()
    env = {**os.environ, "BLIPSEARCH_MODEL": live["settings"].model, "HF_HUB_OFFLINE": "1"}
    data_dir = str(live["settings"].data_dir)
    cmd = [sys.executable, "-m", "cli", "serve", "--port", str(port), "--data-dir", data_dir]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "blipsearch serve did not start"
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        ClipClient = load_clip_client().ClipClient
        client = ClipClient(
            url=f"{base}/knn-service",
            indice_name="photos",
            num_images=5,
            deduplicate=False,
            use_safety_model=False,
            use_violence_detector=False,
        )
        got = client.query(text="a dark photo")
        want = _search_text(base, "a dark photo", 5)
        assert [r["id"] for r in got] == [r["id"] for r in want]
        assert all(r["url"] == f"{base}/v1/collections/photos/images/{r['id']}/file" for r in got)
        assert requests.get(f"{base}/indices-list", timeout=10).json() == ["notes", "photos"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
