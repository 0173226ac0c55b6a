#!/usr/bin/env python
"""``exact`` vs ``fast`` on every model stage, with the machine's GEMM rate as the ceiling.

One run, same CPU, base-size random models; ``core`` (BLIP ViT-B/16 at 384 px + BERT-base):

* GEMM micro-benchmark: 2048³ ``torch.mm`` in fp32 and bf16 (GFLOP/s) - the practical ceiling;
* indexing throughput (img/s) of large JPEGs: the naive fp32 transformers loop (PIL full
  decode, processor, ``vision_model`` + ``vision_proj``), ``blipsearch index`` internals with
  ``precision=exact``, with ``precision=fast`` on torch (``BLIPSEARCH_FAST_RUNTIME=torch``: bf16
  autocast) and with the product's ``fast`` (``auto``: OpenVINO bf16 for the image and text
  stages where the CPU has native bf16 and openvino is installed), each also as a fraction of
  the GEMM ceiling (ViT FLOPs per image × img/s ÷ GEMM FLOP/s; fp32 rate for naive/exact, the
  fast plan's); plus the one-off OpenVINO conversion and the cached load's compile time;
* text-query encode latency p50 / p95 at batch 1 and 8;
* ``itm``: ITM re-rank latency, text→image (k = 16 / 64, cached tokens) and image→text, naive /
  exact / previous fast / fast, with |ΔP|, and whole-process re-ranked searches
  (scripts/bench/fast_itm.py);
* ``captions``: captions/s at batch 8 and whole-process ``index --captions``, naive / exact /
  fast, with the teacher-forced fidelity numbers (scripts/bench/fast_captions.py);
* ``blip2``: base-size (ViT-g) BLIP-2 image embeddings and whole-process ``index``, naive /
  exact / fast, with the cosine bound (scripts/bench/fast_blip2.py).

Each of those modules also runs on its own and writes its own section; here they run in the same
process as the core stage, one after another, and land in one result.

    python scripts/bench/fast_path.py [--quick] [--n 24] [--base-dir DIR] [--stages core itm captions blip2]
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import base_model, gemm, machine, machine_line, update_markdown, write_result

STAGES = ("core", "itm", "captions", "blip2")  # core: GEMM ceiling, indexing, text queries
MODULES = {"itm": "itm", "captions": "captions", "blip2": "blip2"}  # scripts/bench/fast_<name>.py


def vit_gflop(cfg: Any) -> float:
    """Matmul FLOPs of one image through the ViT (patch embedding, attention, MLP)."""
    n = (cfg.image_size // cfg.patch_size) ** 2 + 1
    d, m = cfg.hidden_size, cfg.intermediate_size
    per_layer = 2 * n * (4 * d * d + 2 * d * m) + 4 * n * n * d
    return (cfg.num_hidden_layers * per_layer + 2 * (n - 1) * 3 * cfg.patch_size**2 * d) / 1e9


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def latencies(fn: Any, reps: int, warmup: int = 1) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": statistics.median(ts), "p95_ms": pct(ts, 95), "runs": reps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=24, help="JPEGs to index")
    ap.add_argument("--reps", type=int, default=10, help="text / ITM latency samples")
    ap.add_argument("--ks", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--quick", action="store_true", help="n = 8, k = 16, 3 samples, no captions")
    ap.add_argument("--no-captions", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 on an oversubscribed machine)")
    ap.add_argument("--device", default="cpu", help="accepted for run_all.py; a CPU benchmark")
    ap.add_argument("--base-dir", type=Path, default=None)
    ap.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="what to measure: core (GEMM ceiling, indexing, text queries) here; itm, captions, blip2 by "
        "their own modules (scripts/bench/fast_itm.py, fast_captions.py, fast_blip2.py), whose options follow",
    )
    ap.add_argument("--i2t-k", type=int, default=16, help="itm: image→text candidate texts")
    ap.add_argument("--slow-reps", type=int, default=2, help="itm: timed runs of naive and exact")
    ap.add_argument("--cli-runs", type=int, default=2, help="itm: whole-process re-ranked searches per mode")
    ap.add_argument("--cli-images", type=int, default=16, help="itm: images of those searches' collection")
    ap.add_argument("--tokens", type=int, default=20, help="captions: new tokens per caption (captions/s)")
    ap.add_argument("--beams", type=int, default=3, help="captions: also time this many beams (1: no)")
    ap.add_argument("--caption-reps", type=int, default=2, help="captions: timed batches per row")
    args = ap.parse_args()
    if args.quick:
        args.n, args.ks, args.reps, args.slow_reps, args.cli_runs = 8, [16], 3, 1, 1
        args.caption_reps, args.beams = 1, 1
    if args.no_captions:
        args.stages = [s for s in args.stages if s != "captions"]

    import faiss
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from transformers import BlipForImageTextRetrieval, BlipProcessor

    from blipsearch.config import Settings
    from blipsearch.synthetic import make_image
    from models import load_embedder
    from models.precision import cpu_flags
    from service.indexing import index_paths

    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"})
    if args.threads:
        torch.set_num_threads(args.threads)
    res: dict[str, Any] = {"cpu_flags": flags, "n": args.n, "loadavg_start": os.getloadavg()[0]}
    if "core" in args.stages:
        path = base_model(args.base_dir)
        res["gemm_gflops"] = {"fp32": gemm(torch.float32), "bf16": gemm(torch.bfloat16)}
        print(res, flush=True)
        ov_cache = Path(tempfile.mkdtemp(prefix="ov-cache-"))
        atexit.register(shutil.rmtree, ov_cache, True)
        embs = {
            "exact": load_embedder(str(path), device="cpu", batch_size=8, precision="exact"),
            "fast torch": load_embedder(str(path), device="cpu", batch_size=8, precision="fast", fast_runtime="torch"),
            "fast": load_embedder(
                str(path), device="cpu", batch_size=8, precision="fast", runtime_cache_dir=str(ov_cache)
            ),
        }
        res["fast_plan"] = embs["fast"].plan.describe()  # type: ignore[attr-defined]
        res["fast_runtimes"] = {s: embs["fast"].stage_runtime(s) for s in ("image", "text")}  # type: ignore[attr-defined]
        # The product's fast path converts its towers on first use (once per model, then cached):
        # time that, and a second load's first use (read the IR + compile), before anything is timed.
        warm_px = embs["exact"].preprocess([make_image(i, (640, 480)) for i in range(2)])
        res["openvino_setup_s"] = {}
        for label, emb in (
            ("first load (convert + save + compile)", embs["fast"]),
            ("cached load (read + compile)", None),
        ):
            if emb is None:
                emb = load_embedder(
                    str(path), device="cpu", batch_size=8, precision="fast", runtime_cache_dir=str(ov_cache)
                )
            t0 = time.perf_counter()
            emb.embed_pixels(warm_px)
            emb.embed_texts(["warm up"])
            res["openvino_setup_s"][label] = time.perf_counter() - t0
        print(res, flush=True)
        ref = BlipForImageTextRetrieval.from_pretrained(str(path)).eval()
        proc = BlipProcessor.from_pretrained(str(path))
        gf = vit_gflop(ref.config.vision_config)
        res["vit_gflop_per_image"] = gf
        fast_ceiling = res["gemm_gflops"]["bf16" if res["fast_plan"]["image"] == "bf16" else "fp32"]

        # -- indexing ----------------------------------------------------------------------------
        idx: dict[str, float] = {}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "jpegs"
            folder.mkdir()
            sizes = [(1600, 1200), (2048, 1536), (1280, 960)]
            files = []
            for i in range(args.n):
                files.append(folder / f"{i:04d}.jpg")
                make_image(i, sizes[i % 3]).save(files[-1], "JPEG", quality=90)
            index = faiss.IndexFlatIP(256)
            t0 = time.perf_counter()
            for s in range(0, args.n, 8):
                imgs = [Image.open(p).convert("RGB") for p in files[s : s + 8]]
                with torch.no_grad():
                    px = proc(images=imgs, return_tensors="pt")["pixel_values"]
                    cls = ref.vision_model(pixel_values=px).last_hidden_state[:, 0, :]
                    index.add(F.normalize(ref.vision_proj(cls), dim=-1).numpy())
            idx["naive_fp32"] = args.n / (time.perf_counter() - t0)
            print("naive", idx["naive_fp32"], flush=True)
            for p in ("exact", "fast torch", "fast"):
                settings = Settings(
                    data_dir=Path(tmp) / p.replace(" ", "-"),
                    batch_size=8,
                    decode_workers=2,
                    decode_mode="thread",
                    precision=p.split()[0],
                )
                t0 = time.perf_counter()
                report = index_paths(settings, [folder], "bench", embedder=embs[p], progress=False)
                assert report.added == args.n, report.failures
                idx[p] = args.n / (time.perf_counter() - t0)
                print(p, idx[p], flush=True)
        res["indexing_img_s"] = idx
        res["indexing_fraction_of_gemm"] = {
            "naive_fp32": idx["naive_fp32"] * gf / res["gemm_gflops"]["fp32"],
            "exact": idx["exact"] * gf / res["gemm_gflops"]["fp32"],
            "fast torch": idx["fast torch"] * gf / fast_ceiling,
            "fast": idx["fast"] * gf / fast_ceiling,
        }

        # -- text queries -----------------------------------------------------------------------
        words = "red blue green yellow circle square stripes dots large small".split()
        qs = [f"a photo of a {words[i % 10]} {words[(i * 3) % 10]} number {i}" for i in range(64)]
        res["text_latency"] = {
            f"{p} b{b}": latencies(lambda e=embs[p], b=b: e.embed_texts(qs[:b]), args.reps)
            for p in ("exact", "fast torch", "fast")
            for b in (1, 8)
        }
        print(res["text_latency"], flush=True)
        res["loadavg_end"] = os.getloadavg()[0]
        write_result("fast_path", res)  # partial results survive an interrupted run

    # -- ITM, captions, BLIP-2: each stage's own module, in this run ---------------------------
    for stage in ("itm", "captions", "blip2"):
        if stage in args.stages:
            mod = importlib.import_module(f"fast_{MODULES[stage]}")
            if stage == "blip2":  # ViT-g sizes: its own defaults (fast_blip2.py --help), this run's threads
                stage_args = mod.parse([*(["--threads", str(args.threads)] if args.threads else []), "--no-openvino"])
            else:
                stage_args = args
            res[stage] = mod.run(stage_args)
            res["loadavg_end"] = os.getloadavg()[0]
            write_result("fast_path", res)

    m = machine()
    res["loadavg_end"] = os.getloadavg()[0]
    write_result("fast_path", res)
    update_markdown("fast_path", markdown(res, m, args))


def markdown(r: dict[str, Any], m: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "### `exact` vs `fast`, every stage (scripts/bench/fast_path.py)",
        "",
        f"Machine: {machine_line(m)}; CPU flags: {', '.join(r['cpu_flags'])}. Base-size random models. "
        f"Load average (1 min) before the run: {r.get('loadavg_start', float('nan')):.2f}, after it: "
        f"{r.get('loadavg_end', float('nan')):.2f} (the run's own threads count; well above the core count means "
        f"other work shared the machine and absolute numbers are low). Stages: {', '.join(args.stages)}.",
    ]
    if "indexing_img_s" in r:
        lines += ["", *core_markdown(r)]
    for stage in ("itm", "captions", "blip2"):
        if stage in r:
            lines += ["", importlib.import_module(f"fast_{MODULES[stage]}").markdown(r[stage])]
    lines += ["", f"Reproduce: `python scripts/bench/fast_path.py {' '.join(sys.argv[1:])}`."]
    return "\n".join(lines)


def core_markdown(r: dict[str, Any]) -> list[str]:
    """The GEMM ceiling, indexing and text-query tables."""
    g, idx, frac = r["gemm_gflops"], r["indexing_img_s"], r["indexing_fraction_of_gemm"]
    lines = [
        f"Base-size random BLIP. Fast plan: {r['fast_plan']}; "
        f"runtimes of the default `fast`: {r.get('fast_runtimes')}.",
        "",
        f"GEMM ceiling (2048³ torch.mm): fp32 {g['fp32']:.0f} GFLOP/s, bf16 {g['bf16']:.0f} GFLOP/s "
        f"({g['bf16'] / g['fp32']:.2f}×). ViT-B/16 at 384 px: {r['vit_gflop_per_image']:.1f} GFLOP per image.",
        "",
        f"| indexing {r['n']} JPEGs (1280×960 – 2048×1536), batch 8 | img/s | × naive | fraction of GEMM ceiling |",
        "|---|---|---|---|",
    ]
    fr = r.get("fast_runtimes", {})
    for k, label in (
        ("naive_fp32", "naive fp32 transformers loop"),
        ("exact", "blipsearch exact"),
        ("fast torch", "blipsearch fast, BLIPSEARCH_FAST_RUNTIME=torch"),
        ("fast", f"blipsearch fast (default: image on {fr.get('image', '?')})"),
    ):
        if k in idx:
            lines.append(f"| {label} | {idx[k]:.2f} | {idx[k] / idx['naive_fp32']:.2f}× | {frac[k]:.2f} |")
    lines.append(f"\n`fast` / `exact` indexing: {idx['fast'] / idx['exact']:.2f}×.")
    if "fast torch" in idx:
        lines.append(f"`fast` (default) / `fast` on torch: {idx['fast'] / idx['fast torch']:.2f}×.")
    if r.get("openvino_setup_s"):
        setup = "; ".join(f"{k}: {v:.1f} s" for k, v in r["openvino_setup_s"].items())
        lines.append(f"OpenVINO set-up of both towers, once per process before the timings: {setup}.")
    lines += [
        "",
        "| text-query encode | p50 ms | p95 ms |",
        "|---|---|---|",
    ]
    for k, v in r["text_latency"].items():
        lines.append(f"| {k} | {v['p50_ms']:.1f} | {v['p95_ms']:.1f} |")
    return lines


if __name__ == "__main__":
    main()
