#!/usr/bin/env python
"""Caption throughput: blipsearch's batched Captioner vs a naive one-image-at-a-time loop.

A randomly initialised base-size BLIP captioner (ViT-B/16 at 384 px + BERT-base decoder, the
FLOPs of blip-image-captioning-base). Every caption is forced to exactly ``--tokens`` new
tokens (min = max), so each run does the same decoding work whatever the random weights emit.
naive: ``processor(images=img)`` + ``model.generate`` per image. blipsearch: Captioner with
batch sizes 1, 8, 32.

    python scripts/bench/captions.py [--quick] [--n 32] [--batch-sizes 1 8 32] [--tokens 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import base_model, machine, machine_line, update_markdown, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 8, batch sizes 1 and 8, 10 tokens")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--beams", type=int, default=1)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.quick:
        args.n, args.batch_sizes, args.tokens = 8, [1, 8], 10

    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from blipsearch.synthetic import make_image
    from models.captioners import Decoding, load_captioner

    path = base_model(which="blip-caption")
    cap = load_captioner(str(path), device=args.device)
    ref = BlipForConditionalGeneration.from_pretrained(str(path)).to(cap.model.device, cap.torch_dtype).eval()
    proc = BlipProcessor.from_pretrained(str(path))
    images = [make_image(i, (640, 480)) for i in range(args.n)]
    dec = Decoding(max_new_tokens=args.tokens, min_new_tokens=args.tokens, num_beams=args.beams)
    gen = dec.generate_kwargs()

    def naive() -> None:
        for img in images:
            inputs = proc(images=img, return_tensors="pt").to(cap.model.device, cap.torch_dtype)
            with torch.no_grad():
                ref.generate(**inputs, **gen)

    cap.caption(images[:1], dec)  # warm-up
    rows = []
    t0 = time.perf_counter()
    naive()
    naive_rate = args.n / (time.perf_counter() - t0)
    rows.append({"method": "naive_loop", "batch_size": 1, "items_per_s": naive_rate})
    print(f"naive loop          {naive_rate:6.2f} captions/s", flush=True)
    for bs in args.batch_sizes:
        cap.batch_size = bs
        t0 = time.perf_counter()
        cap.caption(images, dec)
        rate = args.n / (time.perf_counter() - t0)
        rows.append({"method": "blipsearch", "batch_size": bs, "items_per_s": rate, "vs_naive": rate / naive_rate})
        print(f"blipsearch bs={bs:<4} {rate:6.2f} captions/s ({rate / naive_rate:.2f}× naive)", flush=True)
    dev = str(cap.model.device)
    write_result(
        "captions",
        {
            "settings": {
                "n": args.n,
                "tokens": args.tokens,
                "beams": args.beams,
                "device": dev,
                "dtype": str(cap.torch_dtype),
            },
            "rows": rows,
        },
    )
    lines = [
        "## Caption throughput (`scripts/bench/captions.py`)",
        "",
        f"Machine: {machine_line(machine())}. Random base-size BLIP captioner, {args.n} images (640×480), "
        f"exactly {args.tokens} new tokens each, {args.beams} beam(s), device {dev}, {cap.torch_dtype}. "
        f"Reproduce: `python scripts/bench/captions.py{' --quick' if args.quick else ''}`.",
        "",
        "| method | batch | captions / s | vs naive |",
        "|---|---|---|---|",
        f"| naive generate loop | 1 | {naive_rate:.2f} | 1.00× |",
    ]
    lines += [
        f"| blipsearch | {r['batch_size']} | {r['items_per_s']:.2f} | {r['vs_naive']:.2f}× |"
        for r in rows
        if r["method"] == "blipsearch"
    ]
    update_markdown("captions", "\n".join(lines))


if __name__ == "__main__":
    main()
