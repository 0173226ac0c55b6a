#!/usr/bin/env python
"""GPU benchmark: what a lent CUDA card (H200/H100) does with blipsearch's hot paths.

Sections (each timed against a ceiling or a baseline measured in the same run):

* ``gemm``: an 8192³ bf16/fp16 matrix product, the card's measured matrix ceiling (TFLOP/s);
* ``index``: BLIP base image tower (random weights, the FLOPs of blip-itm-base-coco) in fp32,
  fp16 and bf16: images/s at one batch size, and the fraction of the GEMM ceiling it reaches
  (``img/s × GFLOPs per image / ceiling``, FLOPs counted by torch's FlopCounterMode);
* ``faiss``: exact Flat and IVF search QPS and recall@10 on the GPU against FAISS on the CPU
  (same vectors, same queries), and k-means training time GPU vs CPU; where FAISS has no GPU
  (``faiss.get_num_gpus() == 0``, or FAISS is not importable) the section says so, and a
  torch brute-force search on the GPU (matmul + top-k) is measured instead, against FAISS CPU
  Flat where FAISS imports;
* ``itm``: ITM re-rank latency of one text against k = 128 candidates with cached image tokens.

Without a CUDA device the script writes ``{"skipped": true, "reason": ...}`` and exits 0, so it
can run anywhere. Each section that fails records its error and the others still run; a
``--budget-s`` deadline skips the sections it would overrun (recorded as skipped).

    python scripts/bench/gpu.py [--out bench-results/gpu.json] [--quick] [--budget-s 420]
        [--sections gemm index faiss itm]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SECTIONS = ("gemm", "index", "faiss", "itm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench-results/gpu.json"), help="JSON result file")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run: seconds, not minutes)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="skip the sections that would start past this (the first always runs)",
    )
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--models", type=Path, default=None, help="where the random base model is built (default: tmp)")
    args = p.parse_args(argv)
    if args.budget_s <= 0:
        p.error("--budget-s must be > 0")
    return args


def cuda_reason() -> str | None:
    """None when torch sees a CUDA device, else why not (one line)."""
    try:
        import torch
    except ImportError as e:
        return f"torch not importable: {e}"
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return "CUDA_VISIBLE_DEVICES is empty"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    return None


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "host": platform.node()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = props.name
            info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
            info["sms"] = props.multi_processor_count
    except ImportError:
        pass
    for mod in ("transformers", "faiss", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info


def _sync_time(fn: Callable[[], Any], repeat: int, warmup: int = 2) -> float:
    """Median seconds of ``fn`` with the CUDA queue drained around each run."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def bench_gemm(quick: bool) -> dict[str, Any]:
    import torch

    n = 2048 if quick else 8192
    out: dict[str, Any] = {"n": n}
    for name, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        a = torch.randn(n, n, device="cuda", dtype=dt)
        b = torch.randn(n, n, device="cuda", dtype=dt)
        s = _sync_time(lambda a=a, b=b: a @ b, repeat=10, warmup=3)
        out[f"{name}_tflops"] = round(2 * n**3 / s / 1e12, 1)
    return out


def _base_blip(models: Path | None) -> Path:
    from make_test_models import make_all

    root = models or Path(os.environ.get("TMPDIR", "/tmp")) / "blipsearch-gpu-models"
    if not (root / "blip-itm" / "config.json").is_file():
        make_all(root, size="base", seed=0)
    return root / "blip-itm"


def _image_flops(model: Any, pixels: Any) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(pixels[:1])
    return float(counter.get_total_flops())


def bench_index(quick: bool, models: Path | None, ceiling: dict[str, Any] | None) -> dict[str, Any]:
    import torch
    from transformers import BlipForImageTextRetrieval

    path = _base_blip(models)
    batch = 8 if quick else 128
    size = 384
    model = BlipForImageTextRetrieval.from_pretrained(str(path)).eval().cuda()
    vision = model.vision_model
    pixels = torch.randn(batch, 3, size, size, device="cuda")
    flops = _image_flops(vision, pixels)
    out: dict[str, Any] = {"batch": batch, "image_px": size, "gflops_per_image": round(flops / 1e9, 2)}
    ref = None
    for name, dt in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):

        def run(dt: Any = dt) -> Any:
            with torch.no_grad(), torch.autocast("cuda", dtype=dt, enabled=dt != torch.float32):
                emb = model.vision_proj(vision(pixels)[0][:, 0, :])
                return torch.nn.functional.normalize(emb.float(), dim=-1)

        s = _sync_time(run, repeat=3 if quick else 10)
        row: dict[str, Any] = {"img_s": round(batch / s, 1)}
        emb = run()
        if ref is None:
            ref = emb
        else:
            row["min_cosine_vs_fp32"] = round(float((emb * ref).sum(-1).min()), 6)
        key = {"fp16": "fp16_tflops", "bf16": "bf16_tflops"}.get(name)
        if ceiling and key in ceiling:
            row["fraction_of_gemm"] = round(row["img_s"] * flops / (ceiling[key] * 1e12), 3)
        out[name] = row
    return out


def _recall(found: Any, truth: Any) -> float:
    k = truth.shape[1]
    hits = sum(len(set(f[:k].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def bench_faiss(quick: bool) -> dict[str, Any]:
    import numpy as np
    import torch

    n, nq, d, k = (50_000, 256, 256, 10) if quick else (1_000_000, 4096, 256, 10)
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((n, d), dtype=np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = xb[rng.choice(n, nq, replace=False)] + 0.1 * rng.standard_normal((nq, d), dtype=np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    out: dict[str, Any] = {"n": n, "queries": nq, "dim": d, "k": k}

    # torch brute force on the GPU: the baseline that needs no FAISS GPU build (queries in
    # blocks of 512, so the score matrix stays at 2 GB for 1M vectors).
    tb, tq = torch.from_numpy(xb).cuda(), torch.from_numpy(xq).cuda()

    def brute(tb: Any = tb, tq: Any = tq) -> Any:
        return torch.cat([torch.topk(q @ tb.T, k, dim=1).indices for q in tq.split(512)])

    s = _sync_time(brute, repeat=5)
    torch_ids = brute().cpu().numpy()
    out["torch_gpu_flat"] = {"qps": round(nq / s, 1)}
    del tb, tq
    torch.cuda.empty_cache()
    try:
        import faiss
    except ImportError as e:
        out["faiss"] = f"not importable: {e}"
        return out
    cpu = faiss.IndexFlatIP(d)
    cpu.add(xb)
    t0 = time.perf_counter()
    _, truth = cpu.search(xq, k)
    out["cpu_flat"] = {"qps": round(nq / (time.perf_counter() - t0), 1)}
    out["torch_gpu_flat"]["recall_at_10_vs_cpu"] = round(_recall(torch_ids, truth), 4)
    nlist = 256 if quick else 4096
    train = xb[: min(n, 64 * nlist)]
    t0 = time.perf_counter()
    km = faiss.Kmeans(d, nlist, niter=10, seed=1, gpu=False)
    km.train(train)
    out["kmeans_cpu_s"] = round(time.perf_counter() - t0, 2)
    gpus = faiss.get_num_gpus()
    out["faiss_gpus"] = gpus
    if gpus == 0:
        out["gpu"] = "faiss.get_num_gpus() == 0: this FAISS build has no GPU support"
        return out
    res = faiss.StandardGpuResources()
    gflat = faiss.index_cpu_to_gpu(res, 0, cpu)
    s = _sync_time(lambda: gflat.search(xq, k), repeat=5)
    _, gids = gflat.search(xq, k)
    out["gpu_flat"] = {"qps": round(nq / s, 1), "recall_at_10_vs_cpu": round(_recall(gids, truth), 4)}
    t0 = time.perf_counter()
    kmg = faiss.Kmeans(d, nlist, niter=10, seed=1, gpu=True)
    kmg.train(train)
    out["kmeans_gpu_s"] = round(time.perf_counter() - t0, 2)
    quant = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(train)
    ivf.add(xb)
    givf = faiss.index_cpu_to_gpu(res, 0, ivf)
    for nprobe in (8, 32):
        ivf.nprobe = nprobe
        faiss.GpuParameterSpace().set_index_parameter(givf, "nprobe", nprobe)
        t0 = time.perf_counter()
        _, cids = ivf.search(xq, k)
        cpu_s = time.perf_counter() - t0
        s = _sync_time(lambda: givf.search(xq, k), repeat=5)
        _, gi = givf.search(xq, k)
        out[f"ivf{nlist}_nprobe{nprobe}"] = {
            "gpu_qps": round(nq / s, 1),
            "cpu_qps": round(nq / cpu_s, 1),
            "gpu_recall_at_10": round(_recall(gi, truth), 4),
            "cpu_recall_at_10": round(_recall(cids, truth), 4),
        }
    return out


def bench_itm(quick: bool, models: Path | None) -> dict[str, Any]:
    import torch

    from models import load_embedder, load_itm

    path = _base_blip(models)
    k = 16 if quick else 128
    out: dict[str, Any] = {"k": k}
    from PIL import Image

    img = Image.new("RGB", (384, 384), (120, 30, 200))
    for name, dtype, precision in (("fp32", "fp32", "exact"), ("fast", "auto", "fast")):
        emb = load_embedder(str(path), device="cuda", dtype=dtype, precision=precision, batch_size=64)
        scorer = load_itm(emb, batch_size=k)
        tokens = scorer.vision_tokens(emb.preprocess([img] * k))
        s = _sync_time(lambda scorer=scorer, tokens=tokens: scorer.score_text_vs_images("a photo", tokens), repeat=5)
        out[name] = {"ms": round(s * 1000, 2)}
        del emb, scorer, tokens
        torch.cuda.empty_cache()
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"benchmark": "gpu", "environment": environment(), "quick": args.quick}
    reason = cuda_reason()
    if reason is not None:
        result.update(skipped=True, reason=reason)
        return result
    result["skipped"] = False
    t_start = time.monotonic()
    sections: dict[str, Any] = {}
    for name in SECTIONS:
        if name not in args.sections:
            continue
        if sections and time.monotonic() - t_start > args.budget_s:
            sections[name] = {"skipped": f"past the --budget-s {args.budget_s:g} s deadline"}
            continue
        t0 = time.monotonic()
        try:
            if name == "gemm":
                sections[name] = bench_gemm(args.quick)
            elif name == "index":
                sections[name] = bench_index(args.quick, args.models, sections.get("gemm"))
            elif name == "faiss":
                sections[name] = bench_faiss(args.quick)
            else:
                sections[name] = bench_itm(args.quick, args.models)
        except Exception as e:  # noqa: BLE001 - one failing section must not lose the others' numbers
            sections[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=5)}
        sections[name]["wall_s"] = round(time.monotonic() - t0, 1)
    result["sections"] = sections
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "sections"}, default=str))
    for name, sec in result.get("sections", {}).items():
        print(name, json.dumps({k: v for k, v in sec.items() if k != "traceback"}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
