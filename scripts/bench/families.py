#!/usr/bin/env python
"""Indexing throughput per model family, with FLOPs per image beside each.

Base-size, randomly initialised checkpoints with the architectures of the hub models (random
weights cost exactly what trained ones do): CLIP ViT-B/16 at 224 px (openai/clip-vit-base-patch16),
SigLIP base at 224 px (google/siglip-base-patch16-224), ALIGN base (EfficientNet-B7 at 289 px,
kakaobrain/align-base) and BLIP base (ViT-B/16 at 384 px, blip-itm-base-coco: the baseline).
The same N generated JPEGs go through, in one run, for each family:

* ``model``: preprocess + image tower on the decoded images (``Embedder.embed_images``);
* ``index``: ``blipsearch index`` internals (read, decode, preprocess, model, Parquet commit, FAISS)
  into a fresh collection;
* ``flops``: image-tower FLOPs per image, counted by ``torch.utils.flop_counter.FlopCounterMode``
  (matmuls and convolutions; a multiply-add counts 2).

    python scripts/bench/families.py [--n 24] [--batch-size 8] [--families clip siglip align blip]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, base_model, machine, machine_line, update_markdown, write_result

REFERENCE = {
    "clip": "openai/clip-vit-base-patch16 (ViT-B/16, 224 px)",
    "siglip": "google/siglip-base-patch16-224 (ViT-B/16, 224 px)",
    "align": "kakaobrain/align-base (EfficientNet-B7, 289 px)",
    "blip": "Salesforce/blip-itm-base-coco (ViT-B/16, 384 px)",
}


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return sorted(have & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni"})
    except OSError:
        pass
    return []


def checkpoints(families: list[str]) -> dict[str, Path]:
    from make_test_models import make_tokenizer
    from model_families import make_dual_encoders

    out = RESULTS / "models" / "families"
    paths: dict[str, Path] = {}
    duals = [f for f in families if f != "blip"]
    missing = tuple(f for f in duals if not (out / f / "config.json").is_file())
    if missing:
        with tempfile.TemporaryDirectory() as tmp:
            tok = make_tokenizer(Path(tmp), 30524, 0)
            make_dual_encoders(out, "base", 0, tok, only=missing)
    paths.update({f: out / f for f in duals})
    if "blip" in families:
        paths["blip"] = base_model()
    return paths


def make_jpegs(folder: Path, n: int) -> list[Path]:
    """The index_throughput benchmark's images (generated JPEGs, 640×480 to 1600×1200)."""
    import numpy as np

    from blipsearch.synthetic import make_image

    rng = np.random.default_rng(0)
    sizes = [(640, 480), (1024, 768), (1280, 960), (1600, 1200)]
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.jpg"
        make_image(i, sizes[int(rng.integers(0, len(sizes)))]).save(p, "JPEG", quality=90)
        paths.append(p)
    return paths


def image_flops(embedder: Any, pixels: Any) -> float:
    """FLOPs of one image through the image tower (embed_pixels), per image."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        embedder.embed_pixels(pixels[:1])
    return float(counter.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=24, help="images (the same for every family)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--families", nargs="+", default=["clip", "siglip", "align", "blip"])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    from PIL import Image

    from blipsearch.config import Settings
    from models import load_embedder
    from service.indexing import index_paths

    paths = checkpoints(args.families)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "imgs").mkdir()
        files = make_jpegs(Path(tmp) / "imgs", args.n)
        images = [Image.open(p).convert("RGB") for p in files]
        for fam in args.families:
            emb = load_embedder(str(paths[fam]), device=args.device, batch_size=args.batch_size)
            flops = image_flops(emb, emb.preprocess(images[:1]))
            emb.embed_images(images[: args.batch_size])  # warm-up
            t0 = time.perf_counter()
            emb.embed_images(images)
            model_s = time.perf_counter() - t0
            settings = Settings(
                data_dir=Path(tmp) / f"data-{fam}",
                batch_size=args.batch_size,
                decode_workers=2,
                decode_mode="thread",
                device=args.device,
            )
            t0 = time.perf_counter()
            report = index_paths(settings, [Path(tmp) / "imgs"], fam, embedder=emb, progress=False)
            index_s = time.perf_counter() - t0
            assert report.added == args.n, report
            rows.append(
                {
                    "family": fam,
                    "architecture": REFERENCE[fam],
                    "input_px": emb.input_size,
                    "dim": emb.dim,
                    "gflops_per_image": round(flops / 1e9, 2),
                    "model_img_per_s": round(args.n / model_s, 2),
                    "index_img_per_s": round(args.n / index_s, 2),
                    "device": emb.device,
                }
            )
            print(rows[-1], flush=True)
            del emb
            gc.collect()
    base = next((r for r in rows if r["family"] == "blip"), None)
    for r in rows:
        if base is not None:
            r["flops_vs_blip"] = round(r["gflops_per_image"] / base["gflops_per_image"], 3)
            r["index_speedup_vs_blip"] = round(r["index_img_per_s"] / base["index_img_per_s"], 2)
    m = machine()
    m["cpu_flags"] = cpu_flags()
    settings_used = {"n": args.n, "batch_size": args.batch_size, "decode": "thread, 2 workers", "dtype": "auto"}
    write_result("families", {"settings": settings_used, "rows": rows, "machine_flags": m["cpu_flags"]})
    lines = [
        "## Indexing throughput per model family (`scripts/bench/families.py`)",
        "",
        f"Machine: {machine_line(m)}; CPU flags {', '.join(m['cpu_flags']) or 'n/a'}. Shared with other jobs "
        "while it ran (noisy: compare rows of one run, not across runs).",
        f"Settings: {args.n} generated JPEGs (640×480 to 1600×1200), batch size {args.batch_size}, one run; "
        "base-size random checkpoints of each architecture (weights do not change the cost). "
        "BLIP base is the baseline.",
        "",
        "| family | architecture | dim | GFLOPs / image | × BLIP FLOPs | model img/s | index img/s | × BLIP index |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['architecture']} | {r['dim']} | {r['gflops_per_image']} | "
            f"{r.get('flops_vs_blip', '-')} | {r['model_img_per_s']} | {r['index_img_per_s']} | "
            f"{r.get('index_speedup_vs_blip', '-')} |"
        )
    lines += [
        "",
        "*model*: preprocess + image tower on decoded images; *index*: the whole `blipsearch index` path "
        "(read, decode, preprocess, model, Parquet, FAISS). FLOPs: `torch.utils.flop_counter.FlopCounterMode` "
        "over one image's `embed_pixels` (a multiply-add counts 2; attention softmax, norms and activations "
        "are not counted).",
    ]
    update_markdown("families", "\n".join(lines))


if __name__ == "__main__":
    main()
