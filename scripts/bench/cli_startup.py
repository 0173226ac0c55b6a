#!/usr/bin/env python
"""Cold start as whole processes, this tree against the previous landing in the same run.

Times, as separate processes (each a fresh interpreter, the OS file cache warm):

* ``blipsearch --help``;
* ``blipsearch search "..." -c bench --json`` on an existing collection (built once, by this
  tree, in ``fast`` mode);
* ``blipsearch serve``: seconds from the launch until ``/readyz`` answers, and the first
  ``POST /v1/search/text`` after that.

Both trees use the same venv and the same data directory (PYTHONPATH picks the tree), runs
alternate A/B/A/B; each tree gets one untimed search first (it fills the caches that tree
uses: OpenVINO's IR and compiled-blob caches, the query record). Median and min of N runs.

    nice -n 5 python scripts/bench/cli_startup.py [--runs 3] [--model base|tiny|DIR]
        [--runtime auto|torch|openvino] [--prev DIR | --prev-commit SHA] [--no-serve]
        [--data-dir DIR --collection NAME]   (an existing collection instead of a new one)

``--runtime openvino`` runs the OpenVINO fast path on a CPU where ``auto`` keeps torch (no
native bf16): the path ``auto`` takes on native-bf16 CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, base_model, machine, machine_line, update_markdown, write_result

PREV_COMMIT = "384600d"
QUERY = "a red circle on a blue background"


def _env(tree: Path, data_dir: Path, runtime: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(tree),
        "HF_HUB_OFFLINE": "1",
        "BLIPSEARCH_DATA_DIR": str(data_dir),
        "BLIPSEARCH_PRECISION": "fast",
        "BLIPSEARCH_FAST_RUNTIME": runtime,
    }


def _cli(tree: Path, env: dict[str, str], *args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cli", *args], cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: blipsearch {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return wall


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(tree: Path, env: dict[str, str], collection: str) -> dict[str, float]:
    """Seconds from launch to /readyz, and of the first text search after it."""
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--port", str(port)],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{tree}: the server did not start")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        ready = time.perf_counter() - t0
        t1 = time.perf_counter()
        r = httpx.post(f"{url}/v1/search/text", json={"query": QUERY, "collection": collection}, timeout=600)
        first = time.perf_counter() - t1
        r.raise_for_status()
        return {"readyz_s": ready, "first_query_s": first}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _stats(xs: list[float]) -> dict[str, Any]:
    return {"median_s": round(statistics.median(xs), 3), "min_s": round(min(xs), 3), "runs": [round(x, 3) for x in xs]}


def _prev_tree(args: argparse.Namespace, tmp: Path) -> Path:
    if args.prev:
        return Path(args.prev).resolve()
    path = tmp / "prev"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), args.prev_commit], cwd=ROOT, check=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", default="base", help="base, tiny, or a model directory")
    ap.add_argument("--runtime", default="auto", choices=["auto", "torch", "openvino"])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--prev", help="a checkout of the previous landing")
    ap.add_argument("--prev-commit", default=PREV_COMMIT)
    ap.add_argument("--no-serve", action="store_true")
    ap.add_argument("--name", default="cli_startup")
    ap.add_argument("--data-dir", help="an existing data dir (its --collection is searched; nothing is indexed)")
    ap.add_argument("--collection", default="bench")
    args = ap.parse_args()

    from blipsearch.synthetic import write_images

    if args.model in ("base", "tiny"):
        if args.model == "base":
            model = base_model()
        else:
            from make_test_models import make_all

            model = make_all(ROOT / "bench-results" / "models" / "tiny", size="tiny", seed=0)["blip-itm"]
    else:
        model = Path(args.model).resolve()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as tmp_s:
        tmp = Path(tmp_s)
        prev = _prev_tree(args, tmp)
        try:
            data_dir = Path(args.data_dir).resolve() if args.data_dir else tmp / "data"
            trees = {"this": ROOT, "prev": prev}
            envs = {k: _env(t, data_dir, args.runtime) for k, t in trees.items()}
            if not args.data_dir:
                write_images(tmp / "imgs", args.images)
                _cli(ROOT, envs["this"], "index", str(tmp / "imgs"), "-c", args.collection, "--model", str(model))
            search = ("search", QUERY, "-c", args.collection, "--json")
            for name, tree in trees.items():  # untimed: fill the caches each tree uses
                _cli(tree, envs[name], *search)
            times: dict[str, dict[str, list[float]]] = {k: {"help": [], "search": []} for k in trees}
            serve: dict[str, dict[str, list[float]]] = {k: {"readyz_s": [], "first_query_s": []} for k in trees}
            for _ in range(args.runs):
                for name, tree in trees.items():
                    times[name]["help"].append(_cli(tree, envs[name], "--help"))
                    times[name]["search"].append(_cli(tree, envs[name], *search))
            if not args.no_serve:
                for _ in range(max(1, args.runs - 1)):
                    for name, tree in trees.items():
                        for key, value in _serve(tree, envs[name], args.collection).items():
                            serve[name][key].append(value)
        finally:
            if not args.prev:
                subprocess.run(["git", "worktree", "remove", "--force", str(prev)], cwd=ROOT, check=False)
    load = os.getloadavg()
    results = {
        name: {
            "help": _stats(times[name]["help"]),
            "search": _stats(times[name]["search"]),
            **({k: _stats(v) for k, v in serve[name].items()} if not args.no_serve else {}),
        }
        for name in ("this", "prev")
    }
    payload = {
        "settings": {
            "runs": args.runs,
            "model": str(model),
            "runtime": args.runtime,
            "precision": "fast",
            "images": None if args.data_dir else args.images,
            "data_dir": args.data_dir,
            "collection": args.collection,
            "prev_commit": args.prev_commit if not args.prev else str(prev),
            "query": QUERY,
        },
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load],
        "niceness": os.nice(0),
        "results": results,
    }
    path = write_result(args.name, payload)
    m = machine()
    rows = [
        ("`blipsearch --help`", "help"),
        ("`blipsearch search` (existing collection)", "search"),
        ("`serve`: launch → `/readyz`", "readyz_s"),
        ("`serve`: first query after `/readyz`", "first_query_s"),
    ]
    lines = [
        "| process | previous landing: median (min) s | this tree: median (min) s |",
        "|---|---|---|",
    ]
    for label, key in rows:
        if key not in results["this"]:
            continue
        p, t = results["prev"][key], results["this"][key]
        lines.append(f"| {label} | {p['median_s']:.2f} ({p['min_s']:.2f}) | {t['median_s']:.2f} ({t['min_s']:.2f}) |")
    what = f"collection `{args.collection}` of an existing data dir" if args.data_dir else f"{args.images} images"
    body = f"""## Cold start ({args.name})

Whole processes (`scripts/bench/cli_startup.py --runs {args.runs} --model {args.model} --runtime {args.runtime}`),
this tree against the previous landing (`{payload["settings"]["prev_commit"]}`) in the same run, same venv and
data dir, alternating; {what}, `fast` precision, fast runtime `{args.runtime}`, model `{model.name}`
({args.model}). Machine: {machine_line(m)}. Load average (1/5/15 min)
{", ".join(f"{x:.1f}" for x in load_before)} before and {", ".join(f"{x:.1f}" for x in load)} after
(a shared machine: other jobs may have run), niceness {os.nice(0)}. Result: `{path.relative_to(ROOT)}`.

{chr(10).join(lines)}
"""
    update_markdown(args.name, body)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
