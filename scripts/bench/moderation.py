#!/usr/bin/env python
"""Moderation throughput: a 10-category policy (3 prompts each) on a base-size random BLIP model,
with the ITM confirmation sharing the image's cross-attention K/V across prompts vs the naive
forward that repeats the image once per prompt; and, in the same run on the same images, the
record-level kinds: PDQ hashing (pdqhash; plain and with the 7 dihedral variants), matching
against a list of 1M random PDQ hashes (FAISS IndexBinaryFlat, exact Hamming; loading the list
file streamed), the shipped NudeNet detector on ONNX Runtime, and text rules (keywords, a regex
and the four built-ins) over OCR-like text.

Every category's ITC pre-threshold is 0 so every prompt goes to ITM (the worst case: the most
ITM work per image); the ``screened`` row uses a threshold that sends about a third through,
to show what the cheap ITC screen saves. Images: generated 640×480 photos, checked in batches.

    python scripts/bench/moderation.py [--quick] [--n 24] [--batch 8] [--list-size 1000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, base_model, machine, machine_line, timeit, update_markdown, write_result

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
    ap.add_argument("--list-size", type=int, default=1_000_000, help="hashes in the matched list")
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
    kinds = kind_rows(images, args.list_size, args.batch)
    for r in kinds:
        r["vs_shared_kv_screen"] = round(r["items_per_s"] / rows[-1]["images_per_s"], 1)
        print(r, flush=True)
    m = machine()
    settings = {"n": args.n, "batch": args.batch, "categories": 10, "prompts": 30, "device": str(embedder.device),
                "list_size": args.list_size}  # fmt: skip
    path = write_result("moderation", {"settings": settings, "rows": rows, "kinds": kinds})
    table = "\n".join(
        f"| {r['method']} | {r['itc_threshold']} | {r['itm_pairs_per_image']} | {r['images_per_s']} | "
        f"{r['speedup_vs_naive']}× |"
        for r in rows
    )
    kinds_table = "\n".join(
        f"| {r['check']} | {r['what']} | {r['ms_per_item']} | {r['items_per_s']} | {r['vs_shared_kv_screen']}× |"
        for r in kinds
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

Record-level kinds on the same images, same run (median of 3 timed passes after a warm-up;
"vs ITM" is items/s over the shared K/V + ITC screen row). The hash list: {args.list_size:,} random
PDQ hashes (FAISS IndexBinaryFlat, {faiss_threads()} OpenMP threads); each match includes the
file-change check (one `stat`).

| check | what is timed | ms / item | items/s | vs ITM |
|---|---|---|---|---|
{kinds_table}
""",
    )


def faiss_threads() -> int:
    import faiss

    return int(faiss.omp_get_max_threads())


def _timed(fn, n_items: int, what: str, check: str) -> dict:
    t = timeit(fn, repeat=3, warmup=1)
    secs = t["median_s"]
    return {"check": check, "what": what, "items": n_items, "ms_per_item": round(secs * 1e3 / n_items, 3),
            "items_per_s": round(n_items / secs, 1)}  # fmt: skip


def kind_rows(images: list, list_size: int, batch: int) -> list[dict]:
    """PDQ hashing, 1M-hash matching, the NudeNet detector and text rules, timed on ``images``."""
    import tempfile

    from media.pdq import pdq_dihedral, pdq_hash
    from models.detectors.nudenet import NudeNetDetector
    from moderation.hashlists import HashList, read_hashes
    from moderation.kinds.base import Subject
    from moderation.kinds.text_rules import TextRulesCheck
    from moderation.policy import parse_policy

    rows = [
        _timed(lambda: [pdq_hash(im) for im in images], len(images), "PDQ hash of a 640×480 image", "hash_lists"),
        _timed(lambda: [pdq_dihedral(im) for im in images], len(images), "PDQ + 7 dihedral variants", "hash_lists"),
    ]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "list.pdq"
        with open(path, "w") as fh:
            for start in range(0, list_size, 100_000):
                block = rng.integers(0, 256, (min(100_000, list_size - start), 32), dtype=np.uint8)
                fh.write("".join(r.tobytes().hex() + "\n" for r in block))
        t0 = time.perf_counter()
        read_hashes(path)
        load_s = time.perf_counter() - t0
        hl = HashList("bench", path)
        one = [np.frombuffer(bytes.fromhex(pdq_hash(im).hex), np.uint8).reshape(1, 32) for im in images]
        eight = [np.frombuffer(b"".join(bytes.fromhex(h) for h in pdq_dihedral(im)[0]), np.uint8).reshape(8, 32)
                 for im in images]  # fmt: skip
        rows.append(_timed(lambda: [hl.nearest(q) for q in one], len(images),
                           f"nearest of {list_size:,} hashes, 1 query", "hash_lists"))  # fmt: skip
        rows.append(_timed(lambda: [hl.nearest(q) for q in eight], len(images),
                           f"nearest of {list_size:,} hashes, 8 dihedral queries", "hash_lists"))  # fmt: skip
    rows.append({"check": "hash_lists", "what": f"load a {list_size:,}-line list file (stream + index)",
                 "items": list_size, "ms_per_item": round(load_s * 1e3 / list_size, 5),
                 "items_per_s": round(list_size / load_s, 1)})  # fmt: skip
    det = NudeNetDetector()
    rows.append(_timed(lambda: [det.detect(images[i : i + batch]) for i in range(0, len(images), batch)],
                       len(images), f"NudeNet 320n (ONNX Runtime), batches of {batch}", "detectors"))  # fmt: skip
    pol = parse_policy({"name": "b", "version": 1, "text_rules": [
        {"name": "words", "keywords": [f"badword{i}" for i in range(1000)], "action": "block"},
        {"name": "scam", "regex": r"send\s+(btc|bitcoin|eth)", "action": "review"},
        *({"name": b, "builtin": b, "action": "flag"} for b in ("email", "phone", "url", "payment_card")),
    ]})  # fmt: skip
    rules = TextRulesCheck(pol.text_rules)
    words = "the quick brown fox jumps over a lazy dog near the café and sells fresh crème".split()
    texts = [
        "\n".join(" ".join(rng.choice(words, 12)) for _ in range(20)) + "\ncall +1 555 123 4567 or mail a@b.example"
        for _ in images
    ]
    subjects = [Subject(None, None, t) for t in texts]
    what = "6 rules (1000 keywords, regex, 4 built-ins) over 21 lines of OCR text"
    rows.append(_timed(lambda: rules.check(subjects), len(subjects), what, "text_rules"))
    return rows


if __name__ == "__main__":
    main()
