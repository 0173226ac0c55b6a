#!/usr/bin/env python
"""Load test of POST /v1/search/text over real HTTP: QPS and p50/p95/p99, micro-batching off vs on.

    python scripts/bench/api_load.py [--quick] [--clients 1 8 32] [--seconds 15]
    python scripts/bench/api_load.py --precision exact fast --microbatch on --models base --clients 16

``--precision exact fast`` compares the precision modes in one run instead: its
results go to bench-results/api_load_precision.json and their own BENCHMARKS.md section.

For a tiny model and then a base-size random BLIP model (the FLOPs of blip-itm-base-coco), it
indexes generated images into a collection, starts `uvicorn api.app:create_app` in a separate
process with BLIPSEARCH_MICROBATCH=0 and then =1, and drives it with N concurrent HTTP clients
(threads, one keep-alive connection each) for a fixed time. Every query text is different, so
nothing is served from a cache. 503 answers (a full queue) are counted apart from successes.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, base_model, machine, machine_line, update_markdown, write_result

WORDS = "red blue green yellow gray circle square triangle stripes dots large small bright dark".split()


def tiny_model() -> Path:
    from make_test_models import make_all

    out = RESULTS / "models" / "tiny"
    if not (out / "blip-itm" / "config.json").is_file():
        make_all(out, size="tiny", seed=0)
    return out / "blip-itm"


def prepare(data_dir: Path, model: Path, n_images: int) -> None:
    from blipsearch.config import Settings
    from blipsearch.synthetic import write_images
    from service.indexing import index_paths

    write_images(data_dir.parent / "imgs", n_images)
    settings = Settings(data_dir=data_dir, model=str(model), batch_size=16)
    index_paths(settings, [data_dir.parent / "imgs"], "bench", progress=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, microbatch: bool, precision: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        **({"BLIPSEARCH_PRECISION": precision} if precision else {}),
        "BLIPSEARCH_DATA_DIR": str(data_dir),
        "BLIPSEARCH_MICROBATCH": "1" if microbatch else "0",
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--port", str(port), "--log-level"]
    proc = subprocess.Popen([*cmd, "warning"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("server did not start")
    # Load the engine and model, and warm up both code paths.
    for i in range(5):
        httpx.post(f"{url}/v1/search/text", json={"query": f"warm up {i}", "collection": "bench"}, timeout=120)
    return proc, url


def drive(url: str, clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    overloaded = errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(cid: int) -> None:
        nonlocal overloaded, errors
        i = 0
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < stop:
                words = [WORDS[(cid * 7 + i * 3 + j) % len(WORDS)] for j in range(4)]
                body = {"query": f"{' '.join(words)} {cid}-{i}", "collection": "bench", "k": 10}
                t0 = time.perf_counter()
                r = http.post(f"{url}/v1/search/text", json=body)
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                    elif r.status_code == 503:
                        overloaded += 1
                    else:
                        errors += 1
                i += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e3, 2) if lat else None

    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "ok": len(lat),
        "overloaded_503": overloaded,
        "errors": errors,
        "qps": round(len(lat) / wall, 2),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "mean_ms": round(statistics.fmean(lat) * 1e3, 2) if lat else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="clients 1 and 16, 6 s per point")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    ap.add_argument("--device", default="cpu", help="accepted for run_all.py; the server uses BLIPSEARCH_DEVICE")
    ap.add_argument("--precision", nargs="+", choices=["exact", "fast"], default=None, help="compare precision modes")
    ap.add_argument("--microbatch", nargs="+", choices=["off", "on"], default=["off", "on"])
    args = ap.parse_args()
    if args.quick:
        args.clients, args.seconds = [1, 16], 6.0
    if args.precision:
        return compare_precision(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = tiny_model() if name == "tiny" else base_model()
            data_dir = Path(tmp) / name / "data"
            prepare(data_dir, model, args.images)
            for microbatch in (False, True):
                proc, url = start_server(data_dir, microbatch)
                try:
                    for clients in args.clients:
                        row = {"model": name, "microbatch": microbatch, **drive(url, clients, args.seconds)}
                        print(row, flush=True)
                        rows.append(row)
                finally:
                    proc.terminate()
                    proc.wait(30)
    m = machine()
    settings = {k: v for k, v in vars(args).items() if k != "quick"} | {"quick": args.quick}
    path = write_result("api_load", {"settings": settings, "rows": rows})
    table = "\n".join(
        f"| {r['model']} | {'on' if r['microbatch'] else 'off'} | {r['clients']} | {r['qps']} | {r['p50_ms']} | "
        f"{r['p95_ms']} | {r['p99_ms']} | {r['overloaded_503']} | {r['errors']} |"
        for r in rows
    )
    gains = []
    for name in args.models:
        for clients in args.clients:
            off = next(r for r in rows if (r["model"], r["microbatch"], r["clients"]) == (name, False, clients))
            on = next(r for r in rows if (r["model"], r["microbatch"], r["clients"]) == (name, True, clients))
            if off["qps"]:
                gains.append(f"{name}, {clients} clients: {on['qps'] / off['qps']:.2f}×")
    update_markdown(
        "api_load",
        f"""## HTTP search load: micro-batching off vs on (`scripts/bench/api_load.py`)

POST /v1/search/text over real HTTP (uvicorn, 1 worker process) with N concurrent keep-alive
clients for {args.seconds:.0f} s per point, every query text distinct; k = 10 over {args.images}
images (exact Flat index, so the time is the text encoder's). Client threads run on the same
machine as the server. Machine: {machine_line(m)}. Result: `{path.relative_to(ROOT)}`.

| model | micro-batching | clients | QPS | p50 ms | p95 ms | p99 ms | 503s | errors |
|---|---|---|---|---|---|---|---|---|
{table}

QPS with micro-batching on / off: {"; ".join(gains)}.
""",
    )


def compare_precision(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = tiny_model() if name == "tiny" else base_model()
            data_dir = Path(tmp) / name / "data"
            prepare(data_dir, model, args.images)
            for microbatch in (m == "on" for m in args.microbatch):
                for precision in args.precision:
                    proc, url = start_server(data_dir, microbatch, precision)
                    try:
                        for clients in args.clients:
                            row = {"model": name, "microbatch": microbatch, "precision": precision}
                            row |= drive(url, clients, args.seconds)
                            print(row, flush=True)
                            rows.append(row)
                    finally:
                        proc.terminate()
                        proc.wait(30)
    m = machine()
    path = write_result("api_load_precision", {"settings": vars(args), "rows": rows})
    table = "\n".join(
        f"| {r['model']} | {'on' if r['microbatch'] else 'off'} | {r['precision']} | {r['clients']} | {r['qps']} | "
        f"{r['p50_ms']} | {r['p95_ms']} | {r['overloaded_503']} | {r['errors']} |"
        for r in rows
    )
    update_markdown(
        "api_load_precision",
        f"""### HTTP search load: `exact` vs `fast` (`scripts/bench/api_load.py --precision exact fast`)

POST /v1/search/text as above ({args.seconds:.0f} s per point, k = 10 over {args.images} images), the
server started with BLIPSEARCH_PRECISION=exact and then =fast. Machine: {machine_line(m)}; shared
with other engineers' jobs while it ran (noisy). Result: `{path.relative_to(ROOT)}`.

| model | micro-batching | precision | clients | QPS | p50 ms | p95 ms | 503s | errors |
|---|---|---|---|---|---|---|---|---|
{table}
""",
    )


if __name__ == "__main__":
    main()
