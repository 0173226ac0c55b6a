#!/usr/bin/env python
"""Indexing rate by source: local files vs an S3 API on loopback vs Parquet image bytes vs tar
shards (local and in the bucket), each against the model's own rate in the same run.

The same N JPEGs are laid out five ways and each is indexed into a fresh collection through
``service.indexing.index_paths`` (the CLI's path: sources → read threads → decode → model →
shard writer → index). Per source the run reports
* reader img/s: the source alone, listing and reading every image's bytes and hashing them
  (what the pipeline's read stage does), with the pipeline's read-thread count;
* index img/s: the whole job, and its ratio to the local-file job (goal ≥ 0.95) and to the bare
  model forward on pre-processed pixels measured in the same run.
The S3 server is moto's (``ThreadedMotoServer``) on 127.0.0.1, reached through s3fs/botocore.

    python scripts/bench/sources.py [--n 32] [--model-size base|tiny] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import io
import os
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--model-size", choices=["base", "tiny"], default="base")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-markdown", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    import logging

    from moto.server import ThreadedMotoServer

    from blipsearch.config import Settings
    from indexer.decode_pool import DecodeConfig, decode_one
    from models import load_embedder
    from service.indexing import index_paths
    from tests.s3server import free_port

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["BLIPSEARCH_S3_ENDPOINT_URL"] = endpoint
    if args.model_size == "base":
        model_path = base_model()
    else:
        from make_test_models import make_all

        model_path = make_all(Path(tempfile.mkdtemp()) / "m", size="tiny", seed=0)["blip-itm"]
    emb = load_embedder(str(model_path), device="cpu", batch_size=args.batch_size, precision="exact")
    images = _jpegs(args.n)
    rows = []
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

            model_rate = model_rate_now()
            settings = Settings(
                data_dir=tmp / "data",
                batch_size=args.batch_size,
                decode_workers=args.workers,
                decode_mode="thread",
                jpeg_draft=False,
                precision="exact",
                s3_endpoint_url=endpoint,
            )
            threads = args.workers  # the pipeline's read threads in thread-decode mode
            local_rate = None
            for name, source in layouts.items():
                reader = _reader_rate(source, threads, settings.max_file_bytes)
                bare = model_rate_now()
                t0 = time.perf_counter()
                report = index_paths(settings, [source], f"c{len(rows)}", embedder=emb, progress=False)
                rate = report.added / (time.perf_counter() - t0)
                assert report.added == args.n, (name, report.failures)
                local_rate = local_rate or rate
                rows.append(
                    {
                        "source": name,
                        "input": source.replace(str(tmp), "$TMP"),
                        "reader_img_s": reader,
                        "index_img_s": rate,
                        "vs_local": rate / local_rate,
                        "model_img_s": bare,
                        "vs_model": rate / bare,
                    }
                )
                print(rows[-1], flush=True)
                _report(args, model_rate, rows)  # after each source: a cut-short run keeps what it measured
    finally:
        server.stop()


def _report(args: argparse.Namespace, model_rate: float, rows: list[dict]) -> None:
    m = machine()
    write_result(
        "sources",
        {"n": args.n, "model": args.model_size, "batch_size": args.batch_size, "model_img_s": model_rate, "rows": rows},
    )
    if args.no_markdown:
        return
    lines = [
        "## Indexing rate by source (`scripts/bench/sources.py`)",
        "",
        f"Machine: {machine_line(m)}. {args.n} JPEGs 640×480, random {args.model_size}-size BLIP, batch "
        f"{args.batch_size}, {args.workers} decode threads, exact precision (full decodes). S3: moto's server on "
        f"127.0.0.1 through s3fs. Bare model forward at the start: {model_rate:.2f} img/s. Reproduce: "
        f"`python scripts/bench/sources.py --n {args.n} --model-size {args.model_size}`.",
        "",
        "| source | reader alone img/s | bare model img/s (just before) | index img/s | vs local files "
        "| vs bare model |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['source']} | {r['reader_img_s']:.1f} | {r['model_img_s']:.2f} | {r['index_img_s']:.2f} "
            f"| {r['vs_local']:.2f} "
            f"| {r['vs_model']:.2f} |"
        )
    update_markdown("sources", "\n".join(lines))


if __name__ == "__main__":
    main()
