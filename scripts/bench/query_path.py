#!/usr/bin/env python
"""The query path: work done per request (instrumented counters, not timings) for each query
kind, and the p50 latency of a re-ranked text query, this tree against the previous landing.

Counters, per request, through the HTTP API (FastAPI TestClient, in process):

* ``engine_resolutions``: calls of ``AppState.engine`` (each one stats and syncs the engine);
* ``record_reads``: the most times any one record was read (``Collection.get_records``), and
  ``record_read_calls``;
* ``itc_evaluations``: the most times any one candidate's ITC score was computed (the index's
  search results plus ``item_scores``).

Query kinds: text (vector, keyword, hybrid; with and without ITM re-rank, re-rank with a
named ``rerank_model``), image, similar. Each count should be 1.

Both trees run in separate processes over the same data directory (the collection is built
once, by this tree), alternating A/B/A/B; latency: p50 over all timed requests of each tree.

    python scripts/bench/query_path.py [--quick] [--model tiny|base] [--prev DIR | --prev-commit SHA]

``--prev``: a checkout of the previous landing (default: ``git worktree add`` of the commit
this branch started from, ``--prev-commit``, default ``main``'s merge base).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

QUERY = "a photo of a red square on the table"
KINDS = [
    ("text", {}),
    ("text rerank", {"rerank": True}),
    ("text rerank rerank_model", {"rerank": True, "rerank_model": "MODEL"}),
    ("text keyword", {"mode": "keyword"}),
    ("text hybrid rerank", {"mode": "hybrid", "rerank": True}),
    ("image", {}),
    ("similar", {}),
]


# -- the worker: runs inside one tree (PYTHONPATH), prints JSON ------------------------------
def worker(data_dir: str, model: str, k: int, rerank_k: int, repeat: int) -> dict[str, Any]:
    import io

    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.state import AppState
    from blipsearch.config import Settings
    from blipsearch.synthetic import make_image
    from storage.collection import Collection

    settings = Settings(data_dir=Path(data_dir), model=model, microbatch=False)
    app = create_app(settings)
    counts: dict[str, Any] = {"engines": 0, "records": Counter(), "record_calls": 0, "itc": Counter()}
    engine_fn, records_fn = AppState.engine, Collection.get_records

    def count_engine(state: Any, name: str) -> Any:
        counts["engines"] += 1
        return engine_fn(state, name)

    def count_records(coll: Any, ids: Any) -> Any:
        counts["record_calls"] += 1
        counts["records"].update(int(i) for i in ids)
        return records_fn(coll, ids)

    AppState.engine = count_engine  # type: ignore[method-assign]
    Collection.get_records = count_records  # type: ignore[method-assign]
    png = io.BytesIO()
    make_image(7, (320, 240)).save(png, "PNG")
    instrumented: set[int] = set()

    def instrument(client: TestClient) -> None:
        """Count the ITC scores of the collection's index (its search results and item_scores)."""
        import numpy as np

        index = app.state.blip.engines()["bench"].index
        if id(index) in instrumented:
            return
        instrumented.add(id(index))
        search, item_scores = index.search, index.item_scores

        def count_search(queries: Any, n: int, *args: Any, **kwargs: Any) -> Any:
            found = search(queries, n, *args, **kwargs)
            counts["itc"].update(int(i) for i in found[0])
            return found

        def count_scores(query: Any, ids: Any) -> Any:
            counts["itc"].update(int(i) for i in np.asarray(ids).reshape(-1))
            return item_scores(query, ids)

        index.search, index.item_scores = count_search, count_scores

    def request(client: TestClient, kind: str, extra: dict[str, Any]) -> Any:
        body = {"collection": "bench", "k": k, **extra}
        if extra.get("rerank"):
            body["rerank_k"] = rerank_k
        if body.get("rerank_model") == "MODEL":
            body["rerank_model"] = model
        if kind.startswith("text"):
            r = client.post("/v1/search/text", json={"query": QUERY, **body})
        elif kind == "image":
            form = {key: str(v) for key, v in body.items()}
            r = client.post("/v1/search/image", data=form, files={"file": ("q.png", png.getvalue(), "image/png")})
        else:
            r = client.post("/v1/search/similar", json={"collection": "bench", "id": 3, "k": k})
        assert r.status_code == 200, r.text
        return r.json()

    out: dict[str, Any] = {"counters": {}, "latency_ms": [], "cpu_ms": []}
    with TestClient(app) as client:
        for kind, extra in KINDS:
            request(client, kind, extra)  # warm: models, engine, re-ranker
            instrument(client)
            counts.update(engines=0, records=Counter(), record_calls=0, itc=Counter())
            request(client, kind, extra)
            out["counters"][kind] = {
                "engine_resolutions": counts["engines"],
                "record_reads": max(counts["records"].values(), default=0),
                "record_read_calls": counts["record_calls"],
                "itc_evaluations": max(counts["itc"].values(), default=0),
            }
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            request(client, "text rerank", {"rerank": True})
            out["latency_ms"].append((time.perf_counter() - t0) * 1e3)
            out["cpu_ms"].append((time.process_time() - c0) * 1e3)  # all threads of this process
    return out


# -- the driver --------------------------------------------------------------------------------
def run_worker(tree: Path, args: argparse.Namespace, data_dir: Path, model: Path, repeat: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "BLIPSEARCH_JPEG_DRAFT": "0"}
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        str(data_dir),
        str(model),
        str(args.k),
        str(args.rerank_k),
        str(repeat),
    ]
    proc = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"worker in {tree} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prev_tree(args: argparse.Namespace, root: Path) -> Path:
    if args.prev:
        return Path(args.prev).resolve()
    commit = args.prev_commit or subprocess.check_output(["git", "merge-base", "HEAD", "main"], cwd=root, text=True)
    path = Path(tempfile.gettempdir()) / f"blipsearch-prev-{commit.strip()[:12]}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit.strip()], cwd=root, check=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model, fewer requests")
    ap.add_argument("--model", choices=["tiny", "base"], default="base", help="random BLIP checkpoint size")
    ap.add_argument("--prev", help="a checkout of the previous landing")
    ap.add_argument("--prev-commit", help="the previous landing's commit (default: merge base with main)")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--rerank-k", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=10, help="timed requests per process")
    ap.add_argument("--rounds", type=int, default=3, help="A/B rounds (separate processes each)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import ROOT, base_model, machine, machine_line, update_markdown, write_result

    if args.quick:
        args.images, args.repeat, args.rounds, args.model = 16, 4, 1, "tiny"
    prev = prev_tree(args, ROOT)
    from blipsearch.config import Settings
    from blipsearch.synthetic import write_images
    from service.indexing import index_paths

    if args.model == "tiny":
        sys.path.insert(0, str(ROOT / "scripts" / "bench"))
        from api_load import tiny_model

        model = tiny_model()
    else:
        model = base_model()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        write_images(Path(tmp) / "imgs", args.images)
        settings = Settings(data_dir=data_dir, model=str(model), batch_size=16)
        index_paths(settings, [Path(tmp) / "imgs"], "bench", progress=False, cache_itm_features=True)
        runs: dict[str, list[dict[str, Any]]] = {"previous": [], "this": []}
        for _ in range(args.rounds):
            for name, tree in (("previous", prev), ("this", ROOT)):
                runs[name].append(run_worker(tree, args, data_dir, model, args.repeat))
                print(name, runs[name][-1]["counters"]["text rerank"], flush=True)
    result: dict[str, Any] = {
        "settings": {
            "model": "tiny random BLIP" if args.model == "tiny" else "base (random BLIP ViT-B/16 384 px + BERT-base)",
            "images": args.images,
            "k": args.k,
            "rerank_k": args.rerank_k,
            "itm_features": "cached",
            "timed_requests_per_tree": args.repeat * args.rounds,
            "previous_tree": str(prev),
        },
    }
    for name, rs in runs.items():
        lat = [x for r in rs for x in r["latency_ms"]]
        cpu = [x for r in rs for x in r["cpu_ms"]]
        result[name] = {
            "counters": rs[-1]["counters"],
            "rerank_text_p50_ms": round(statistics.median(lat), 1),
            "rerank_text_min_ms": round(min(lat), 1),
            "rerank_text_cpu_p50_ms": round(statistics.median(cpu), 1),
            "latencies_ms": [round(x, 1) for x in lat],
        }
    write_result("query_path", result)
    m = machine()
    lines = [
        "## Query path: work per request (`scripts/bench/query_path.py`)",
        "",
        f"Machine: {machine_line(m)}. Settings: {result['settings']['model']}, {args.images} images, "
        f"k {args.k}, rerank_k {args.rerank_k} (ITM features cached), in-process API (TestClient); "
        f"both trees in separate processes over one data directory, {args.rounds} A/B rounds.",
        "",
        "Per request: engine resolutions (`AppState.engine`), the most reads of one record, record-read "
        "calls, the most ITC evaluations of one candidate (previous → this tree; each should be 1).",
        "",
        "| query | engine resolutions | record reads | record-read calls | ITC evaluations |",
        "|---|---|---|---|---|",
    ]
    for kind, _ in KINDS:
        a, b = result["previous"]["counters"][kind], result["this"]["counters"][kind]
        cells = [
            f"{a[c]} → {b[c]}" for c in ("engine_resolutions", "record_reads", "record_read_calls", "itc_evaluations")
        ]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    pa, pb = result["previous"]["rerank_text_p50_ms"], result["this"]["rerank_text_p50_ms"]
    ma, mb = result["previous"]["rerank_text_min_ms"], result["this"]["rerank_text_min_ms"]
    ca, cb = result["previous"]["rerank_text_cpu_p50_ms"], result["this"]["rerank_text_cpu_p50_ms"]
    lines += [
        "",
        f"Re-ranked text query (k {args.k}, rerank_k {args.rerank_k}), {args.repeat * args.rounds} requests per "
        "tree, A/B interleaved:",
        "",
        "| tree | p50 wall ms | min wall ms | p50 CPU ms (all threads of the process) |",
        "|---|---|---|---|",
        f"| previous landing | {pa} | {ma} | {ca} |",
        f"| this tree | {pb} | {mb} | {cb} |",
        "",
        "Wall times on a shared machine (other jobs running) spread widely; the process CPU time per "
        "request is the steadier comparison.",
    ]
    update_markdown("query_path", "\n".join(lines))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        here = str(Path(__file__).resolve().parent)
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(here)]  # its rerank.py is no package
        d, mdl, kk, rk, rep = sys.argv[2:7]
        print(json.dumps(worker(d, mdl, int(kk), int(rk), int(rep))))
    else:
        main()
