#!/usr/bin/env python
"""Photo-library decode rate per format against the model's indexing rate.

For each format, the decode stage's work per image (indexer/decode_pool.py:decode_one: the one
safe decode at the model's input side, EXIF/XMP capture metadata, the checkpoint's
preprocessing) on one thread, in images per second: JPEG (Pillow, DCT draft), HEIC
(pillow-heif), RAW preview (a DNG whose IFD0 is an 8-bit RGB preview, written by tifffile: the
preview is used), RAW demosaic (a DNG without a preview, written by PiDNG: LibRaw demosaics,
at half size). The baseline in the same run: the model's rate, a base-size BLIP image tower
(random weights, the FLOPs of blip-itm-base-coco) embedding preprocessed batches of 8.
A format whose decode rate is above the model's rate does not bound indexing (with one decode
worker; the pipeline runs several).

    nice -n 5 python scripts/bench/library.py [--quick] [--n 8] [--side 2016]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common import base_model, machine, machine_line, update_markdown, write_result


def _files(n: int, side: int) -> dict[str, list[bytes]]:
    import pillow_heif

    from blipsearch.synthetic import make_image
    from tests.photo_library import Shot, dng_bytes, dng_with_preview

    w, h = side, side * 3 // 4
    out: dict[str, list[bytes]] = {"JPEG": [], "HEIC": [], "RAW preview": [], "RAW demosaic": []}
    for i in range(n):
        img = make_image(i, (w, h))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out["JPEG"].append(buf.getvalue())
        buf = io.BytesIO()
        pillow_heif.from_pillow(img).save(buf, quality=80)
        out["HEIC"].append(buf.getvalue())
        preview = np.asarray(img.resize((w // 2, h // 2)))  # cameras embed a reduced-size preview
        out["RAW preview"].append(dng_with_preview(preview, w, h))
        out["RAW demosaic"].append(dng_bytes(Shot(f"r{i}", seed=i), w, h))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 4, 1024-pixel side")
    ap.add_argument("--n", type=int, default=8, help="images per format")
    ap.add_argument("--side", type=int, default=2016, help="long side of the images (phone: 4032)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.quick:
        args.n, args.side = 4, 1024

    from indexer.decode_pool import DecodeConfig, decode_one
    from models import load_embedder

    cache = os.environ.get("BENCH_MODELS")  # a folder that already holds the base-size checkpoints
    emb = load_embedder(str(base_model(Path(cache) if cache else None)), device=args.device)
    side = emb.input_size
    cfg = DecodeConfig(emb.preprocessor(), None, 10**9, side)
    files = _files(args.n, args.side)
    rows = []
    for fmt, datas in files.items():
        decode_one(cfg, datas[0])  # warm-up (plugin registration, LibRaw start-up)
        t0 = time.perf_counter()
        for d in datas:
            decode_one(cfg, d)
        rate = len(datas) / (time.perf_counter() - t0)
        mb = sum(map(len, datas)) / len(datas) / 2**20
        rows.append({"format": fmt, "images_per_s": rate, "mean_file_mib": mb})
        print(f"{fmt:<13} {rate:7.2f} images/s decoded ({mb:.2f} MiB each)", flush=True)
    pixels = np.stack([decode_one(cfg, d).pixels for d in files["JPEG"][:1]] * 8)
    emb.embed_pixels(pixels)  # warm-up
    t0 = time.perf_counter()
    reps = 2
    for _ in range(reps):
        emb.embed_pixels(pixels)
    model_rate = reps * len(pixels) / (time.perf_counter() - t0)
    print(f"model         {model_rate:7.2f} images/s embedded (batch 8)", flush=True)
    for r in rows:
        r["vs_model"] = r["images_per_s"] / model_rate
    load = os.getloadavg()
    settings = {"n": args.n, "side": args.side, "model_input": side, "device": args.device, "load_avg": load}
    write_result("library", {"settings": settings, "model_images_per_s": model_rate, "rows": rows})
    lines = [
        "## Photo-library decode rate per format (`scripts/bench/library.py`)",
        "",
        f"Machine: {machine_line(machine())}; **shared**: load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        f"(1/5/15 min) on {os.cpu_count()} cores while measuring, under `nice -n 5`: absolute rates are low, the "
        f"ratios within the run are what it shows. {args.n} images per format, {args.side}×{args.side * 3 // 4}, "
        f"one decode thread, model input {side} px. Baseline in the same run: a base-size BLIP image tower "
        f"(random weights), batches of 8, {model_rate:.2f} images/s. "
        f"Reproduce: `nice -n 5 python scripts/bench/library.py{' --quick' if args.quick else ''}`.",
        "",
        "| format | decode + preprocess, images/s (1 thread) | × the model's rate | mean file |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['format']} | {r['images_per_s']:.2f} | {r['vs_model']:.2f}× | {r['mean_file_mib']:.2f} MiB |"
        for r in rows
    ]
    lines += [
        "",
        "RAW preview: the DNG's IFD0 is an uncompressed RGB preview at half the sensor's side (tifffile cannot "
        "write a JPEG-compressed one without imagecodecs); cameras embed JPEG previews, whose rate this run does "
        "not measure (expected near the JPEG row's). RAW demosaic: LibRaw's AHD demosaic at half size "
        "(the sensor's half side still "
        "covers the model's input). The formats and the model run one after the other; under this load the "
        "model (two torch threads against many other processes) suffered most, so the × column overstates the "
        "margin: on an idle machine rerun it before trusting the ratio.",
    ]
    update_markdown("library", "\n".join(lines))


if __name__ == "__main__":
    main()
