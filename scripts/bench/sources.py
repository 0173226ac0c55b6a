#!/usr/bin/env python
"""Indexing rate by source: local files vs an S3 API on loopback vs Parquet image bytes vs tar
shards (local and in the bucket), each against the model's own rate in the same run.

The same N JPEGs are laid out five ways and each is indexed into a fresh collection through
``service.indexing.index_paths`` (the CLI's path: sources → object prefetch → read threads →
decode → model → shard writer → index).

On a shared machine one job's rate mostly shows how busy the machine was, so local files and S3
objects are measured interleaved: ``--rounds`` rounds, each running both (local first in even
rounds, S3 first in odd ones, so a drift in load hits both alike); the result is the median of
the per-round ratios S3/local (goal ≥ 0.95), with every round's ratio and the load average
around it. The other sources run once after the rounds, each against the local rate of the last
round and the bare model forward measured just before it. Per source the run also reports the
reader alone: listing and reading every image's bytes and hashing them.
The S3 server is moto's, in its own process on 127.0.0.1 (as a store is), reached through
s3fs/botocore.

    python scripts/bench/sources.py [--n 64] [--rounds 3] [--model-size base|tiny] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, base_model, machine, machine_line, update_markdown, write_result

sys.path.insert(0, str(ROOT))


def _jpegs(n: int) -> list[bytes]:
    from blipsearch.synthetic import make_image

    out = []
    for i in range(n):
        buf = io.BytesIO()
        make_image(i, (640, 480)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _layouts(tmp: Path, images: list[bytes], endpoint: str) -> dict[str, str]:
    import boto3
    import datasets
    import webdataset as wds
    from PIL import Image

    (tmp / "files").mkdir()
    for i, data in enumerate(images):
        (tmp / "files" / f"{i:05d}.jpg").write_bytes(data)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="bench")
    for i, data in enumerate(images):
        s3.put_object(Bucket="bench", Key=f"imgs/{i:05d}.jpg", Body=data)
    ds = datasets.Dataset.from_dict(
        {"image": [Image.open(io.BytesIO(d)) for d in images]}, features=datasets.Features({"image": datasets.Image()})
    )
    ds = ds.cast_column("image", datasets.Image(decode=False))
    ds.to_parquet(str(tmp / "train.parquet"))
    (tmp / "shards").mkdir()
    per = max(1, len(images) // 4)
    for s in range(0, len(images), per):
        with wds.TarWriter(str(tmp / "shards" / f"{s // per:05d}.tar")) as sink:
            for i in range(s, min(s + per, len(images))):
                sink.write({"__key__": f"{i:05d}", "jpg": images[i]})
    n_shards = len(list((tmp / "shards").iterdir()))
    for p in sorted((tmp / "shards").iterdir()):
        s3.put_object(Bucket="bench", Key=f"shards/{p.name}", Body=p.read_bytes())
    last = f"{n_shards - 1:05d}"
    return {
        "local files": str(tmp / "files"),
        "S3 objects (loopback)": "s3://bench/imgs",
        "Parquet image bytes": str(tmp / "train.parquet"),
        "tar shards (local)": str(tmp / "shards" / f"{{00000..{last}}}.tar"),
        "tar shards (S3)": f"s3://bench/shards/{{00000..{last}}}.tar",
    }


def _reader_rate(source: str, threads: int, max_bytes: int) -> float:
    from indexer.sources import open_sources
    from media.decode import read_source

    t0 = time.perf_counter()
    items = list(open_sources([source]))
    with ThreadPoolExecutor(threads) as pool:
        done = list(pool.map(lambda it: read_source(it.uri, it.path, it.data, max_bytes).sha256, items))
    return len(done) / (time.perf_counter() - t0)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _moto_process(port: int) -> subprocess.Popen[bytes]:
    """moto's S3 server in its own process (a store does not share the indexer's CPU time slice
    or interpreter lock), ready when its port answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("moto's server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved local/S3 rounds")
    ap.add_argument("--model-size", choices=["base", "tiny"], default="base")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-others", action="store_true", help="only the local/S3 rounds")
    ap.add_argument("--no-markdown", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    from blipsearch.config import Settings
    from indexer.decode_pool import DecodeConfig, decode_one
    from models import load_embedder
    from service.indexing import index_paths
    from tests.s3server import free_port

    port = free_port()
    server = _moto_process(port)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["BLIPSEARCH_S3_ENDPOINT_URL"] = endpoint
    if args.model_size == "base":
        model_path = base_model()
    else:
        from make_test_models import make_all

        model_path = make_all(Path(tempfile.mkdtemp()) / "m", size="tiny", seed=0)["blip-itm"]
    emb = load_embedder(str(model_path), device="cpu", batch_size=args.batch_size, precision="exact")
    images = _jpegs(args.n)
    result: dict = {"n": args.n, "model": args.model_size, "batch_size": args.batch_size, "rounds": [], "rows": []}
    try:
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            layouts = _layouts(tmp, images, endpoint)
            cfg = DecodeConfig(emb.preprocessor(), None, 10**8, None)
            pixels = np.stack([decode_one(cfg, d).pixels for d in images[: args.batch_size]])
            emb.embed_pixels(pixels)  # warm-up

            def model_rate_now() -> float:  # the bare forward, measured next to each source's run
                t0 = time.perf_counter()
                emb.embed_pixels(pixels)
                return len(pixels) / (time.perf_counter() - t0)

            result["model_img_s"] = model_rate_now()
            settings = Settings(
                data_dir=tmp / "data",
                batch_size=args.batch_size,
                decode_workers=args.workers,
                decode_mode="thread",
                jpeg_draft=False,
                precision="exact",
                s3_endpoint_url=endpoint,
            )
            runs = 0
            runs_detail: list[dict] = result.setdefault("runs", [])

            def index_rate(source: str) -> float:
                nonlocal runs
                runs += 1
                cpu0, store0 = time.process_time(), _cpu_s(server.pid)
                t0 = time.perf_counter()
                report = index_paths(settings, [source], f"c{runs}", embedder=emb, progress=False)
                wall = time.perf_counter() - t0
                rate = report.added / wall
                assert report.added == args.n, (source, report.failures)
                timings = report.timings or {}
                runs_detail.append(
                    {
                        "source": source.replace(str(tmp), "$TMP"),
                        "wall_s": wall,
                        "indexer_cpu_s": time.process_time() - cpu0,  # all its threads
                        "store_cpu_s": _cpu_s(server.pid) - store0,  # the S3 server process
                        "model_busy_s": (timings.get("model") or {}).get("busy_s"),
                        "load_avg_1m": os.getloadavg()[0],
                    }
                )
                print(runs_detail[-1], flush=True)
                return rate

            readers = {name: _reader_rate(src, args.workers, settings.max_file_bytes) for name, src in layouts.items()}
            local, s3 = layouts["local files"], layouts["S3 objects (loopback)"]
            for r in range(args.rounds):
                load_before = os.getloadavg()[0]
                order = [("local", local), ("s3", s3)] if r % 2 == 0 else [("s3", s3), ("local", local)]
                rates = {key: index_rate(src) for key, src in order}
                cpu = {key: runs_detail[i - len(order)] for i, (key, _) in enumerate(order)}
                result["rounds"].append(
                    {
                        "order": [k for k, _ in order],
                        "local_img_s": rates["local"],
                        "s3_img_s": rates["s3"],
                        "ratio": rates["s3"] / rates["local"],
                        "load_avg_1m": [load_before, os.getloadavg()[0]],
                        "indexer_cpu_s": {k: v["indexer_cpu_s"] for k, v in cpu.items()},
                        "store_cpu_s_during_s3": cpu["s3"]["store_cpu_s"],
                    }
                )
                print(result["rounds"][-1], flush=True)
                _report(args, result)  # after each round: a cut-short run keeps what it measured
            ratios = [x["ratio"] for x in result["rounds"]]
            result["s3_vs_local_median"] = statistics.median(ratios)
            last_local = result["rounds"][-1]["local_img_s"]
            others = [] if args.no_others else [k for k in layouts if k not in ("local files", "S3 objects (loopback)")]
            for name in ["local files", "S3 objects (loopback)", *others]:
                row = {"source": name, "input": layouts[name].replace(str(tmp), "$TMP"), "reader_img_s": readers[name]}
                if name == "local files":
                    row.update(index_img_s=statistics.median(x["local_img_s"] for x in result["rounds"]), vs_local=1.0)
                elif name.startswith("S3 objects"):
                    row.update(
                        index_img_s=statistics.median(x["s3_img_s"] for x in result["rounds"]),
                        vs_local=result["s3_vs_local_median"],
                    )
                else:
                    bare = model_rate_now()
                    rate = index_rate(layouts[name])
                    row.update(index_img_s=rate, vs_local=rate / last_local, model_img_s=bare, vs_model=rate / bare)
                result["rows"].append(row)
                print(row, flush=True)
                _report(args, result)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _report(args: argparse.Namespace, result: dict) -> None:
    m = machine()
    write_result("sources", result)
    if args.no_markdown:
        return
    rounds = result["rounds"]
    ratios = [x["ratio"] for x in rounds]
    loads = [la for x in rounds for la in x["load_avg_1m"]]
    lines = [
        "## Indexing rate by source (`scripts/bench/sources.py`)",
        "",
        f"Machine: {machine_line(m)}; shared with other jobs: 1-minute load average "
        f"{min(loads):.1f}–{max(loads):.1f} during the rounds. {args.n} JPEGs 640×480, random "
        f"{args.model_size}-size BLIP, batch {args.batch_size}, {args.workers} decode threads, exact precision "
        "(full decodes). S3: moto's server in its own process on 127.0.0.1, through s3fs; objects "
        f"fetched 8 at a time ahead of the decoder. Bare model forward at the start: {result['model_img_s']:.2f} "
        f"img/s. Reproduce: `python scripts/bench/sources.py --n {args.n} --rounds {args.rounds} "
        f"--model-size {args.model_size}`.",
        "",
        f"Local files vs S3 objects, interleaved ({len(rounds)} rounds): median ratio S3/local "
        f"**{statistics.median(ratios):.2f}** (goal ≥ 0.95).",
        "",
        "| round | order | local img/s | S3 img/s | S3/local | indexer CPU s (local, S3) | S3 server CPU s "
        "| load avg (before, after) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, x in enumerate(rounds):
        cpu = x.get("indexer_cpu_s") or {}
        lines.append(
            f"| {i + 1} | {' → '.join(x['order'])} | {x['local_img_s']:.2f} | {x['s3_img_s']:.2f} | {x['ratio']:.2f} "
            f"| {cpu.get('local', 0):.1f}, {cpu.get('s3', 0):.1f} | {x.get('store_cpu_s_during_s3', 0):.1f} "
            f"| {x['load_avg_1m'][0]:.1f}, {x['load_avg_1m'][1]:.1f} |"
        )
    if result["rows"]:
        lines += [
            "",
            "All sources (local and S3: medians over the rounds; the others: one run each, against the last "
            "round's local rate and the bare forward just before):",
            "",
            "| source | reader alone img/s | index img/s | vs local files | bare model img/s (just before) "
            "| vs bare model |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            bare = f"{r['model_img_s']:.2f}" if "model_img_s" in r else "–"
            vs_model = f"{r['vs_model']:.2f}" if "vs_model" in r else "–"
            lines.append(
                f"| {r['source']} | {r['reader_img_s']:.1f} | {r['index_img_s']:.2f} | {r['vs_local']:.2f} "
                f"| {bare} | {vs_model} |"
            )
    update_markdown("sources", "\n".join(lines))


if __name__ == "__main__":
    main()
