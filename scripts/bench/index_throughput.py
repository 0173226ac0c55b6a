#!/usr/bin/env python
"""Indexing throughput: blipsearch's pipeline vs the naive transformers loop, same images.

N generated JPEGs of realistic sizes (640×480 to 1600×1200) are indexed
* naive: per batch, PIL open → BlipProcessor → BlipForImageTextRetrieval vision_model +
  vision_proj → normalize → faiss.IndexFlatIP.add (transformers as shipped);
* blipsearch: ``blipsearch index`` internals (read threads, decode/preprocess in a process
  pool (``--decode``), overlapped with the model, Parquet shard commits, FAISS index) into a
  fresh collection;
and the bare vision-encoder forward rate on pre-processed pixels is measured in the same run,
so blipsearch's rate can be read as a fraction of what the model alone allows.

    python scripts/bench/index_throughput.py [--quick] [--n 96] [--batch-sizes 1 8 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import base_model, machine, machine_line, update_markdown, write_result


def make_jpegs(folder: Path, n: int) -> list[Path]:
    from blipsearch.synthetic import make_image

    rng = np.random.default_rng(0)
    sizes = [(640, 480), (1024, 768), (1280, 960), (1600, 1200)]
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.jpg"
        make_image(i, sizes[int(rng.integers(0, len(sizes)))]).save(p, "JPEG", quality=90)
        paths.append(p)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 24, batch size 8 only")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--decode", nargs="+", default=["process", "thread"], choices=["process", "thread"], help="decode stages to run"
    )
    args = ap.parse_args()
    if args.quick:
        args.n, args.batch_sizes = 24, [8]

    import faiss
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from transformers import BlipForImageTextRetrieval, BlipProcessor

    from blipsearch.config import Settings
    from models import load_embedder
    from service.indexing import index_paths

    path = base_model()
    emb = load_embedder(str(path), device=args.device)
    ref = BlipForImageTextRetrieval.from_pretrained(str(path)).to(emb.model.device, emb.torch_dtype).eval()
    proc = BlipProcessor.from_pretrained(str(path))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = make_jpegs(Path(tmp), args.n)
        pixels = emb.preprocess([Image.open(files[i]).convert("RGB") for i in range(min(8, args.n))])
        for bs in args.batch_sizes:
            # bare model forward on ready pixels
            batch = np.repeat(pixels, (bs + len(pixels) - 1) // len(pixels), axis=0)[:bs]
            emb.embed_pixels(batch)
            reps = max(1, 16 // bs)
            t0 = time.perf_counter()
            for _ in range(reps):
                emb.embed_pixels(batch)
            bare = reps * bs / (time.perf_counter() - t0)

            # naive transformers loop
            index = faiss.IndexFlatIP(256)
            t0 = time.perf_counter()
            for s in range(0, args.n, bs):
                imgs = [Image.open(p).convert("RGB") for p in files[s : s + bs]]
                inputs = proc(images=imgs, return_tensors="pt")
                with torch.no_grad():
                    px = inputs["pixel_values"].to(emb.model.device, emb.torch_dtype)
                    cls = ref.vision_model(pixel_values=px).last_hidden_state[:, 0, :]
                    vec = F.normalize(ref.vision_proj(cls).float(), dim=-1).cpu().numpy()
                index.add(vec)
            naive = args.n / (time.perf_counter() - t0)

            # blipsearch, once per decode stage
            emb.batch_size = bs
            for method, rate in (("bare_forward", bare), ("naive_transformers", naive)):
                rows.append({"method": method, "batch_size": bs, "items_per_s": rate})
            for mode in args.decode:
                settings = Settings(
                    data_dir=Path(tmp) / f"data{bs}{mode}", batch_size=bs, decode_workers=2, decode_mode=mode
                )
                t0 = time.perf_counter()
                report = index_paths(settings, [tmp], "bench", embedder=emb, progress=False)
                ours = report.added / (time.perf_counter() - t0)
                assert report.added == args.n, report.failures
                stages = {k: v for k, v in report.timings.items() if isinstance(v, dict)}
                rows.append(
                    {
                        "method": "blipsearch",
                        "decode": mode,
                        "batch_size": bs,
                        "items_per_s": ours,
                        "stages": stages,
                        "fraction_of_bare": ours / bare,
                        "vs_naive": ours / naive,
                    }
                )
                print(
                    f"bs={bs:<3} decode={mode:<7} bare {bare:6.2f} img/s  naive {naive:6.2f}  blipsearch {ours:6.2f}  "
                    f"({ours / bare:.2f} of bare, {ours / naive:.2f}× naive)",
                    flush=True,
                )
    dev = str(emb.model.device)
    write_result(
        "index_throughput",
        {
            "settings": {
                "n": args.n,
                "batch_sizes": args.batch_sizes,
                "device": dev,
                "dtype": str(emb.torch_dtype),
                "decode_workers": 2,
                "decode_mode": args.decode,
            },
            "rows": rows,
        },
    )
    lines = [
        "## Indexing throughput (`scripts/bench/index_throughput.py`)",
        "",
        f"Machine: {machine_line(machine())}. {args.n} JPEGs 640×480–1600×1200, random base-size BLIP "
        f"(ViT-B/16 at 384 px), device {dev}, {emb.torch_dtype}. Reproduce: "
        f"`python scripts/bench/index_throughput.py {' '.join(sys.argv[1:])}`. JPEG draft decoding on "
        "(BLIPSEARCH_JPEG_DRAFT): images of 768 px or more a side decode at reduced scale. "
        "Decode stage: a pool of 2 processes or 2 threads (process start-up is inside the timed run).",
        "",
        "| batch | decode | bare forward img/s | naive transformers img/s | blipsearch img/s | blipsearch / bare "
        "| vs naive |",
        "|---|---|---|---|---|---|---|",
    ]
    for bs in args.batch_sizes:
        r = {x["method"]: x for x in rows if x["batch_size"] == bs and x["method"] != "blipsearch"}
        for o in (x for x in rows if x["batch_size"] == bs and x["method"] == "blipsearch"):
            lines.append(
                f"| {bs} | {o['decode']} | {r['bare_forward']['items_per_s']:.2f} | "
                f"{r['naive_transformers']['items_per_s']:.2f} | {o['items_per_s']:.2f} | "
                f"{o['fraction_of_bare']:.2f} | {o['vs_naive']:.2f}× |"
            )
    update_markdown("index_throughput", "\n".join(lines))


if __name__ == "__main__":
    main()
