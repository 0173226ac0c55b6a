#!/usr/bin/env python
"""Soak test: mixed traffic against a real server for a fixed time, with hostile clients.

    python scripts/bench/soak.py [--seconds 600] [--clients 16] [--model-size base|tiny]
                                 [--rss-every 5] [--name soak]

It indexes generated images into a collection, starts ``uvicorn api.app:create_app`` in its own
process, and runs for ``--seconds`` (default 10 minutes):

* ``--clients`` ordinary clients (threads, one keep-alive connection each), each picking per
  request: text search, image search (multipart), clip-retrieval ``/knn-service`` by text and
  by base64 image, ``/v1/embed`` texts, a record read, a thumbnail, an upload (write key) and
  a delete of one of its own uploads;
* one slow client: an upload whose body trickles at ~1 KiB/s (the server must cut it off);
* one oversized-body client: bodies over the per-request cap, declared and chunked;
* one ``reembed`` (to a second model) at a third of the run and one ``compact`` at two thirds,
  as CLI processes on the same data dir.

Reported: p50/p99 latency per route, status counts, 5xx count (goal 0; 503 answers with
Retry-After counted apart), the server's RSS sampled every ``--rss-every`` seconds (the series,
and its least-squares slope in MB per minute over the run after warm-up; goal: flat), the load
average, and the records before and after against the acknowledged writes (goal: equal).
Results go to bench-results/<name>.json and the ``<name>`` section of BENCHMARKS.md (a short
trial run can use ``--seconds 60 --model-size tiny --name soak-short`` and leave the 10-minute
``soak`` results alone).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, machine, machine_line, update_markdown, write_result

PART = b'--b\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
WORDS = "red blue green yellow gray circle square triangle stripes dots large small bright dark".split()
COLLECTION = "soak"


def models(size: str) -> tuple[Path, Path]:
    """The collection's model and the model the mid-run reembed moves it to."""
    from make_test_models import make_all

    if size == "tiny":
        out = RESULTS / "models" / "tiny"
        if not (out / "blip2-itm" / "config.json").is_file():
            make_all(out, size="tiny", seed=0)
        return out / "blip-itm", out / "blip2-itm"
    first, second = RESULTS / "models" / "base", RESULTS / "models" / "base-seed1"
    for out, seed in ((first, 0), (second, 1)):
        if not (out / "blip-itm" / "config.json").is_file():
            make_all(out, size="base", seed=seed)
    return first / "blip-itm", second / "blip-itm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def png(seed: int, side: int = 96) -> bytes:
    from blipsearch.synthetic import make_image

    buf = io.BytesIO()
    make_image(seed, (side, side)).save(buf, "PNG")
    return buf.getvalue()


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: dict[str, int] = defaultdict(int)  # transport errors (no HTTP answer)
        self.added: set[int] = set()
        self.deleted: set[int] = set()

    def record(self, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.status[route][status] += 1
            if status < 500:
                self.latency[route].append(seconds)

    def report(self) -> dict[str, Any]:
        def pct(values: list[float], p: float) -> float | None:
            v = sorted(values)
            return round(v[min(len(v) - 1, int(p / 100 * len(v)))] * 1e3, 1) if v else None

        routes = {}
        for route in sorted(self.status):
            lat = self.latency[route]
            routes[route] = {
                "requests": sum(self.status[route].values()),
                "status": {str(k): v for k, v in sorted(self.status[route].items())},
                "p50_ms": pct(lat, 50),
                "p99_ms": pct(lat, 99),
                "transport_errors": self.errors[route],
            }
        fives = sum(n for r in self.status.values() for code, n in r.items() if code >= 500 and code != 503)
        overloaded = sum(r.get(503, 0) for r in self.status.values())
        return {"routes": routes, "5xx": fives + overloaded, "5xx_excluding_503": fives, "503_overloaded": overloaded}


def slope_mb_per_min(samples: list[tuple[float, float | None]]) -> float | None:
    """Least-squares slope of RSS (MB) over time, per minute; None with under 3 samples."""
    pts = [(t, v) for t, v in samples if v is not None]
    if len(pts) < 3:
        return None
    mt = statistics.fmean(t for t, _ in pts)
    mv = statistics.fmean(v for _, v in pts)
    var = sum((t - mt) ** 2 for t, _ in pts)
    if var == 0:
        return None
    return round(60 * sum((t - mt) * (v - mv) for t, v in pts) / var, 2)


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def client_loop(cid: int, url: str, keys: dict[str, str], stop: float, stats: Stats) -> None:
    import httpx

    rng = random.Random(cid)
    auth = {"Authorization": f"Bearer {keys['write']}"}
    mine: list[int] = []
    img = png(cid)
    b64 = base64.b64encode(img).decode()
    seq = 0
    with httpx.Client(base_url=url, timeout=120) as http:
        while time.monotonic() < stop:
            seq += 1
            words = " ".join(rng.choice(WORDS) for _ in range(3))
            kind = rng.choices(
                ["text", "image", "knn_text", "knn_image", "embed", "record", "thumb", "upload", "delete"],
                weights=[30, 10, 10, 5, 8, 8, 4, 15, 5],
            )[0]
            t0 = time.perf_counter()
            try:
                if kind == "text":
                    r = http.post("/v1/search/text", json={"query": f"{words} {cid}-{seq}", "collection": COLLECTION})
                elif kind == "image":
                    r = http.post(
                        "/v1/search/image", files={"file": ("q.png", img)}, data={"collection": COLLECTION, "k": "10"}
                    )
                elif kind == "knn_text":
                    r = http.post("/knn-service", json={"text": words, "indice_name": COLLECTION, "num_images": 10})
                elif kind == "knn_image":
                    r = http.post("/knn-service", json={"image": b64, "indice_name": COLLECTION, "num_images": 10})
                elif kind == "embed":
                    r = http.post("/v1/embed", json={"texts": [words], "collection": COLLECTION})
                elif kind == "record":
                    r = http.get(f"/v1/collections/{COLLECTION}/images/{rng.randrange(0, 64)}")
                elif kind == "thumb":
                    r = http.get(f"/v1/collections/{COLLECTION}/images/{rng.randrange(0, 64)}/thumbnail")
                elif kind == "upload":
                    data = png(100_000 + cid * 100_000 + seq)
                    r = http.post(
                        f"/v1/collections/{COLLECTION}/images", files=[("files", (f"{seq}.png", data))], headers=auth
                    )
                    if r.status_code == 200:
                        ids = r.json()["ids"]
                        mine += ids
                        with stats.lock:
                            stats.added.update(ids)
                else:
                    if not mine:
                        continue
                    rid = mine.pop(rng.randrange(len(mine)))
                    r = http.delete(f"/v1/collections/{COLLECTION}/images/{rid}", headers=auth)
                    if r.status_code == 200:
                        with stats.lock:
                            stats.deleted.add(rid)
                    elif r.status_code != 404:
                        mine.append(rid)
            except httpx.HTTPError:
                with stats.lock:
                    stats.errors[kind] += 1
                continue
            stats.record(kind, r.status_code, time.perf_counter() - t0)


def slow_client(port: int, keys: dict[str, str], stop: float, stats: Stats) -> None:
    """An upload whose body trickles in at ~1 KiB/s, again and again."""
    head = (
        f"POST /v1/collections/{COLLECTION}/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        f"Authorization: Bearer {keys['write']}\r\nContent-Type: multipart/form-data; boundary=b\r\n\r\n"
    ).encode()
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        status = 0
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(head + f"{len(PART):x}\r\n".encode() + PART + b"\r\n")
                sock.setblocking(False)
                while time.monotonic() < stop:
                    try:
                        sock.sendall(b"400\r\n" + b"\0" * 1024 + b"\r\n")
                    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                        break
                    try:
                        answer = sock.recv(4096)
                        if answer:
                            status = int(answer.split(b" ", 2)[1])
                            break
                    except BlockingIOError:
                        pass
                    time.sleep(1.0)
        except OSError:
            pass
        stats.record("slow_upload", status, time.perf_counter() - t0)


def oversized_client(port: int, keys: dict[str, str], stop: float, stats: Stats, cap: int) -> None:
    """Bodies over the per-request cap: a declared Content-Length, then a chunked stream."""
    auth = f"Authorization: Bearer {keys['write']}\r\n"
    n = 0
    while time.monotonic() < stop:
        n += 1
        t0 = time.perf_counter()
        status = 0
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                if n % 2:
                    sock.sendall(
                        f"POST /v1/collections/{COLLECTION}/images HTTP/1.1\r\nHost: x\r\n{auth}"
                        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {cap * 4}\r\n\r\n".encode()
                    )
                else:
                    sock.sendall(
                        f"POST /v1/collections/{COLLECTION}/images HTTP/1.1\r\nHost: x\r\n{auth}"
                        "Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                    )
                    block = b"10000\r\n" + b"\0" * 65536 + b"\r\n"
                    sock.sendall(f"{len(PART):x}\r\n".encode() + PART + b"\r\n")
                    sent = 0
                    try:
                        while sent < 2 * cap:
                            sock.sendall(block)
                            sent += len(block)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                answer = sock.recv(4096)
                status = int(answer.split(b" ", 2)[1]) if answer else 0
        except (OSError, ValueError, IndexError):
            pass
        stats.record("oversized", status, time.perf_counter() - t0)
        time.sleep(0.5)


def _thin(samples: list[tuple[float, float | None]], n: int) -> list[tuple[float, float | None]]:
    """At most ``n`` evenly spaced samples (the first and last kept), for the markdown series."""
    if len(samples) <= n:
        return samples
    step = (len(samples) - 1) / (n - 1)
    return [samples[round(i * step)] for i in range(n)]


def run_cli(args: list[str], env: dict[str, str], log: list[dict[str, Any]], name: str) -> None:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cli", *args], env=env, cwd=ROOT, capture_output=True, text=True)
    log.append(
        {"op": name, "rc": done.returncode, "seconds": round(time.perf_counter() - t0, 1), "stderr": done.stderr[-500:]}
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--model-size", choices=["base", "tiny"], default="base")
    ap.add_argument("--rss-every", type=float, default=5.0, help="Seconds between RSS samples.")
    ap.add_argument("--name", default="soak", help="Results name: bench-results/<name>.json, BENCHMARKS.md section.")
    args = ap.parse_args()

    import httpx

    from blipsearch.config import Settings
    from blipsearch.synthetic import write_images
    from service.indexing import index_paths
    from storage.api_keys import create_key
    from storage.catalog import open_catalog

    first, second = models(args.model_size)
    tmp = Path(tempfile.mkdtemp(prefix="blipsearch-soak-"))
    data = tmp / "data"
    cap = 4 << 20  # bytes per request body
    settings = Settings(data_dir=data, model=str(first), batch_size=16, shard_size=64)
    write_images(tmp / "imgs", args.images)
    index_paths(settings, [tmp / "imgs"], COLLECTION, progress=False)
    catalog = open_catalog(settings.catalog_url())
    keys = {s: create_key(catalog, f"soak-{s}", s)[0] for s in ("write",)}
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BLIPSEARCH_DATA_DIR": str(data),
        "BLIPSEARCH_MODEL": str(first),
        "BLIPSEARCH_ALLOWED_MODELS": f'["{second}"]',
        "BLIPSEARCH_MAX_REQUEST_BYTES": str(cap),
        "BLIPSEARCH_MAX_UPLOAD_BYTES": str(1 << 20),
        "BLIPSEARCH_MAX_INFLIGHT_BODY_BYTES": str(64 << 20),
        "BLIPSEARCH_BODY_RATE_GRACE_S": "5",
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--port", str(port)]
    server = subprocess.Popen([*cmd, "--log-level", "warning"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        for i in range(3):  # load the engine and model
            httpx.post(f"{url}/v1/search/text", json={"query": f"warm {i}", "collection": COLLECTION}, timeout=300)
        before = httpx.get(f"{url}/v1/collections/{COLLECTION}").json()["count"]
        stats = Stats()
        t_start = time.monotonic()
        stop = t_start + args.seconds
        rss: list[tuple[float, float | None]] = []
        load_start = load_average()
        ops: list[dict[str, Any]] = []
        threads = [threading.Thread(target=client_loop, args=(c, url, keys, stop, stats)) for c in range(args.clients)]
        threads.append(threading.Thread(target=slow_client, args=(port, keys, stop, stats)))
        threads.append(threading.Thread(target=oversized_client, args=(port, keys, stop, stats, cap)))
        for t in threads:
            t.start()
        reembed_at, compact_at = t_start + args.seconds / 3, t_start + 2 * args.seconds / 3
        side: list[threading.Thread] = []
        while time.monotonic() < stop:
            rss.append((round(time.monotonic() - t_start, 1), rss_mb(server.pid)))
            now = time.monotonic()
            if now >= reembed_at and not any(t.name == "reembed" for t in side):
                job = ["reembed", "-c", COLLECTION, "--model", str(second)]
                side.append(threading.Thread(target=run_cli, args=(job, env, ops, "reembed"), name="reembed"))
                side[-1].start()
            reembedding = any(t.name == "reembed" and t.is_alive() for t in side)
            if now >= compact_at and not reembedding and not any(t.name == "compact" for t in side):
                job = ["compact", "-c", COLLECTION]
                side.append(threading.Thread(target=run_cli, args=(job, env, ops, "compact"), name="compact"))
                side[-1].start()
            time.sleep(max(0.5, min(args.rss_every, stop - time.monotonic())))
        load_end = load_average()
        for t in threads + side:
            t.join()
        rss.append((round(time.monotonic() - t_start, 1), rss_mb(server.pid)))
        after = httpx.get(f"{url}/v1/collections/{COLLECTION}", timeout=60).json()["count"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = stats.report()
    expected = before + len(stats.added) - len(stats.deleted)
    values = [v for _, v in rss if v is not None]
    third = max(1, len(values) // 3)
    warm = [(t, v) for t, v in rss if t >= min(60.0, args.seconds / 10)]  # past the first caches' fill
    result = {
        "settings": {
            "seconds": args.seconds,
            "clients": args.clients,
            "model_size": args.model_size,
            "images": args.images,
            "max_request_bytes": cap,
            "body_rate_grace_s": 5,
            "rss_every_s": args.rss_every,
        },
        "load_average": {"start": load_start, "end": load_end},
        **report,
        "side_ops": [
            {k: v for k, v in o.items() if k != "stderr" or o["rc"]} for o in ops
        ],  # compact waits for reembed
        "records": {
            "before": before,
            "acknowledged_adds": len(stats.added),
            "acknowledged_deletes": len(stats.deleted),
            "expected": expected,
            "after": after,
            "equal": after == expected,
        },
        "rss_mb": {
            "first_third_median": round(statistics.median(values[:third]), 1) if values else None,
            "last_third_median": round(statistics.median(values[-third:]), 1) if values else None,
            "max": max(values) if values else None,
            "slope_mb_per_min": slope_mb_per_min(warm),
            "samples": rss,
        },
    }
    write_result(args.name, result)
    m = machine()
    lines = [
        f"Soak ({args.seconds:.0f} s, {args.clients} clients + 1 slow + 1 oversized-body client, "
        f"{args.model_size} random BLIP, reembed at 1/3, compact at 2/3 (after the reembed); scripts/bench/soak.py). "
        f"Machine: {machine_line(m)}; load average {load_start} at the start, {load_end} at the end "
        "(the machine may have been shared).",
        "",
        "| route | requests | p50 ms | p99 ms | statuses |",
        "|---|---|---|---|---|",
    ]
    for route, r in report["routes"].items():
        codes = ", ".join(f"{k}: {v}" for k, v in r["status"].items())
        lines.append(f"| {route} | {r['requests']} | {r['p50_ms']} | {r['p99_ms']} | {codes} |")
    rec = result["records"]
    rs = result["rss_mb"]
    lines += [
        "",
        f"5xx: **{report['5xx']}**, of them 503 (overloaded, Retry-After): "
        f"{report['503_overloaded']}. Side operations: "
        + ", ".join(f"{o['op']} rc {o['rc']} in {o['seconds']} s" for o in ops)
        + ".",
        f"Records: {rec['before']} before + {rec['acknowledged_adds']} acknowledged uploads - "
        f"{rec['acknowledged_deletes']} acknowledged deletes = {rec['expected']}; found {rec['after']} "
        f"({'equal' if rec['equal'] else 'NOT equal'}).",
        f"Server RSS: median {rs['first_third_median']} MB in the first third, {rs['last_third_median']} MB in "
        f"the last third, max {rs['max']} MB; slope {rs['slope_mb_per_min']} MB/min after warm-up. Series "
        "(s: MB): " + ", ".join(f"{t:.0f}: {v}" for t, v in _thin(rss, 20)) + ".",
    ]
    update_markdown(args.name, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
