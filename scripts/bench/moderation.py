#!/usr/bin/env python
"""Moderation throughput: a 10-category policy (3 prompts each) on a base-size random BLIP model,
with the ITM confirmation sharing the image's cross-attention K/V across prompts vs the naive
forward that repeats the image once per prompt.

Every category's ITC pre-threshold is 0 so every prompt goes to ITM (the worst case: the most
ITM work per image); the ``screened`` row uses a threshold that sends about a third through,
to show what the cheap ITC screen saves. Images: generated 640×480 photos, checked in batches.

    python scripts/bench/moderation.py [--quick] [--n 24] [--batch 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, base_model, machine, machine_line, update_markdown, write_result

CATEGORIES = ["weapons", "drugs", "gore", "nudity", "hate symbols", "gambling", "alcohol", "tobacco", "fire", "crowds"]


def policy(itc: float) -> dict:
    return {
        "name": "bench",
        "version": 1,
        "categories": [
            {
                "name": c.replace(" ", "_"),
                "prompts": [f"a photo of {c}", f"an image showing {c}", f"{c} in a picture"],
                "itc_threshold": itc,
                "itm_threshold": 0.5,
                "action": "flag",
            }
            for c in CATEGORIES
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 8")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.quick:
        args.n = 8
    import torch

    from blipsearch.synthetic import make_image
    from models import load_embedder, load_itm
    from moderation.checks import Moderator
    from moderation.policy import parse_policy

    torch.manual_seed(0)
    model = base_model()
    embedder = load_embedder(str(model), device=args.device, batch_size=args.batch)
    scorer = load_itm(embedder, batch_size=32)
    images = [make_image(i, (640, 480)) for i in range(args.n)]
    # A screen threshold at the 67th percentile of these images' best-prompt screen scores.
    probe = Moderator(parse_policy(policy(0.0)), embedder, scorer)
    cosines = embedder.embed_images(images[: args.batch]) @ probe.prompt_emb.T
    screen_at = float(np.percentile((1 + cosines) / 2, 67))

    def run(mod: Moderator) -> tuple[float, int]:
        mod.check_images(images[:2])  # warm-up
        t0 = time.perf_counter()
        itm_prompts = 0
        for i in range(0, len(images), args.batch):
            for res in mod.check_images(images[i : i + args.batch]):
                itm_prompts += sum(3 for c in res.categories if c.itm is not None)  # 3 prompts each
        return time.perf_counter() - t0, itm_prompts

    rows = []
    for label, itc, shared in (
        ("naive (image repeated per prompt)", 0.0, False),
        ("shared K/V", 0.0, True),
        ("shared K/V + ITC screen", screen_at, True),
    ):
        mod = Moderator(parse_policy(policy(itc)), embedder, scorer, shared_kv=shared)
        secs, itm_prompts = run(mod)
        rows.append(
            {
                "method": label,
                "itc_threshold": round(itc, 4),
                "images": len(images),
                "seconds": round(secs, 3),
                "images_per_s": round(len(images) / secs, 3),
                "itm_pairs_per_image": round(itm_prompts / len(images), 1),
            }
        )
        print(rows[-1], flush=True)
    base = rows[0]["images_per_s"]
    for r in rows:
        r["speedup_vs_naive"] = round(r["images_per_s"] / base, 2)
    m = machine()
    settings = {"n": args.n, "batch": args.batch, "categories": 10, "prompts": 30, "device": str(embedder.device)}
    path = write_result("moderation", {"settings": settings, "rows": rows})
    table = "\n".join(
        f"| {r['method']} | {r['itc_threshold']} | {r['itm_pairs_per_image']} | {r['images_per_s']} | "
        f"{r['speedup_vs_naive']}× |"
        for r in rows
    )
    update_markdown(
        "moderation",
        f"""## Moderation throughput (`scripts/bench/moderation.py`)

10 categories × 3 prompts, base-size random BLIP (ViT-B/16 at 384 px, BERT-base ITM), {args.n} generated
640×480 images in batches of {args.batch}, {embedder.device}. Machine: {machine_line(m)}.
Result: `{path.relative_to(ROOT)}`.

| method | ITC screen threshold | ITM pairs / image | images/s | vs naive |
|---|---|---|---|---|
{table}
""",
    )


if __name__ == "__main__":
    main()
