#!/usr/bin/env python
"""OCR quality and cost: a labelled text-image set rendered here, indexed with real OCR models.

The set: one word per image (English words, numbers, mixed case, Chinese), rendered with
Debian's fonts (scripts/ocr_render.py) under one varied condition at a time from a base of
24 px, upright, sharp, PNG, plain background: sizes 10-72 px, rotations ±15°, Gaussian blur,
JPEG quality 30-95, photo-like textured backgrounds. A second set of text-free textured
"photos" measures the cost of OCR where text is rare.

Reports, per condition, the character error rate (CER) and word recall of the stored
``ocr_text``; text-query retrieval (the image's word as the query, only that image holds it):
recall@1/@10 for ITC-only (vector) search, keyword over OCR (``--target ocr``) and hybrid
(RRF); and images/s of ``index`` without OCR, with OCR (gate on), and with OCR with the gate
off, on the text-free set, in the same run. The ITC model is a randomly initialised base-size
BLIP (the FLOPs of blip-itm-base-coco; no hub access here), so its recall is chance level: it
is the cost baseline, not a quality one. OCR uses the real PP-OCRv4 models of rapidocr-onnxruntime.

    python scripts/bench/ocr.py [--per-condition 6] [--rare 40] [--engine rapidocr]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common import RESULTS, machine, machine_line, update_markdown, write_result

EN_WORDS = (
    "harbour garden window market silver candle forest bridge winter yellow ticket rocket planet"
    " orange pepper castle museum island violin dragon basket mirror pillow guitar camera jacket"
    " saddle tunnel meadow anchor parrot walnut copper marble lemon falcon cactus barrel lantern"
    " thunder pebble canyon glacier harvest compass feather velvet biscuit"
).split()
ZH_WORDS = "图书馆 火车站 咖啡 银行 医院 学校 超市 公园 出口 入口 地铁 餐厅 机场 博物馆 药店 邮局 酒店 书店".split()

BASE: dict[str, Any] = {"size_px": 24, "rotation": 0.0, "blur": 0.0, "jpeg_quality": None, "textured": False}
CONDITIONS: dict[str, dict[str, Any]] = {
    "base 24px": {},
    "10px": {"size_px": 10},
    "16px": {"size_px": 16},
    "48px": {"size_px": 48},
    "72px": {"size_px": 72},
    "rot +15": {"rotation": 15.0},
    "rot -15": {"rotation": -15.0},
    "blur 1.0": {"blur": 1.0},
    "blur 2.0": {"blur": 2.0},
    "jpeg q30": {"jpeg_quality": 30},
    "jpeg q95": {"jpeg_quality": 95},
    "textured": {"textured": True},
}
KINDS = ("english", "number", "mixed", "chinese")


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def word_for(kind: str, rng: np.random.Generator, used: set[str]) -> str:
    while True:
        if kind == "english":
            w = str(rng.choice(EN_WORDS))
        elif kind == "number":
            w = str(int(rng.integers(1000, 9_999_999)))
        elif kind == "mixed":
            base = str(rng.choice(EN_WORDS))
            w = "".join(c.upper() if rng.random() < 0.4 else c for c in base)
            w = w[0].upper() + w[1:] + str(int(rng.integers(2, 99)))
        else:
            w = str(rng.choice(ZH_WORDS))
        if w.lower() not in used:
            used.add(w.lower())
            return w
        if kind == "chinese" and len(used) > 10_000:
            return w


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(truth: str, got: str) -> float:
    """Character error rate of the best-matching line (case-folded, spaces ignored)."""
    t = truth.lower().replace(" ", "")
    lines = [ln.lower().replace(" ", "") for ln in (got or "").splitlines()] or [""]
    return min(edit_distance(t, ln) for ln in lines) / max(1, len(t))


def render_sets(root: Path, per_condition: int, rare: int, seed: int) -> tuple[list[dict[str, Any]], Path, Path]:
    import ocr_render
    from PIL import Image

    rng = np.random.default_rng(seed)
    text_dir, rare_dir = root / "text", root / "rare"
    text_dir.mkdir(parents=True)
    rare_dir.mkdir(parents=True)
    labels: list[dict[str, Any]] = []
    used: set[str] = set()
    for ci, (cond, change) in enumerate(CONDITIONS.items()):
        for j in range(per_condition):
            kind = KINDS[j % len(KINDS)]
            if kind == "chinese" and len(used & {w.lower() for w in ZH_WORDS}) >= len(ZH_WORDS):
                kind = "english"
            word = word_for(kind, rng, used)
            args = {**BASE, **change}
            r = ocr_render.render(word, cjk=kind == "chinese", seed=seed * 1000 + ci * 100 + j, **args)
            name = f"t{ci:02d}_{j:02d}.png"
            r.image.save(text_dir / name)
            labels.append({"file": name, "word": word, "kind": kind, "condition": cond, "size_px": args["size_px"]})
    for i in range(rare):
        Image.fromarray(ocr_render.texture(480, 320, np.random.default_rng(seed + 10_000 + i))).save(
            rare_dir / f"p{i:03d}.jpg", quality=90
        )
    return labels, text_dir, rare_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-condition", type=int, default=6)
    ap.add_argument("--rare", type=int, default=40, help="text-free images for the images/s comparison")
    ap.add_argument("--engine", default="rapidocr")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--model", type=Path, default=None, help="ITC checkpoint (default: random base-size BLIP)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from blipsearch.config import Settings
    from models import load_embedder
    from service.engines import open_engine
    from service.indexing import index_paths
    from storage.collection import Collection

    work = Path(tempfile.mkdtemp(prefix="blipsearch-ocr-bench-"))
    model_dir = args.model or base_blip(RESULTS / "models" / "base-itm")
    labels, text_dir, rare_dir = render_sets(work, args.per_condition, args.rare, args.seed)
    settings = Settings(data_dir=work / "data", model=str(model_dir), batch_size=8, ocr_engine=args.engine)
    embedder = load_embedder(str(model_dir), device="cpu", batch_size=8, precision=settings.precision)

    # -- throughput on text-free images: no OCR, OCR with the gate, OCR without the gate ------------
    speed: dict[str, Any] = {}
    for label, ocr, gate in (
        ("index", False, True),
        ("index --ocr", True, True),
        ("index --ocr, gate off", True, False),
    ):
        s = settings.model_copy(update={"ocr_gate": gate})
        name = f"rare{len(speed)}"
        t0 = time.perf_counter()
        rep = index_paths(s, [rare_dir], name, embedder=embedder, progress=False, ocr=ocr)
        dt = time.perf_counter() - t0
        speed[label] = {
            "images": rep.added,
            "seconds": round(dt, 2),
            "images_per_s": round(rep.added / dt, 2),
            "stage_timings": rep.timings,  # busy seconds per stage (model, decode, ocr_gate, ocr, ...)
        }
        print(label, speed[label], flush=True)
    # -- the text set, indexed with OCR --------------------------------------------------------
    t0 = time.perf_counter()
    rep = index_paths(settings, [text_dir], "text", embedder=embedder, progress=False, ocr=True)
    text_seconds = time.perf_counter() - t0
    coll = Collection.open(settings.data_dir, "text")
    recs = {r["uri"].rsplit("/", 1)[-1]: r for r in coll.read_table(["id", "uri", "ocr_text"]).to_pylist()}
    engine = open_engine(settings, "text")
    per: dict[str, dict[str, list[float]]] = {}
    retrieval: dict[str, dict[str, list[float]]] = {}
    for lab in labels:
        rec = recs[lab["file"]]
        got = rec["ocr_text"] or ""
        c = cer(lab["word"], got)
        found = lab["word"].lower() in got.lower()
        stats = per.setdefault(lab["condition"], {"cer": [], "word_recall": []})
        stats["cer"].append(c)
        stats["word_recall"].append(float(found))
        bucket = "< 16 px" if lab["size_px"] < 16 else ">= 16 px"
        for how, kw in (
            ("ITC only", {"mode": "vector"}),
            ("keyword over OCR", {"mode": "keyword", "target": "ocr"}),
            ("hybrid", {"mode": "hybrid"}),
        ):
            hits = [h.id for h in engine.search_text(lab["word"], 10, **kw).hits]
            rank = hits.index(rec["id"]) + 1 if rec["id"] in hits else None
            r = retrieval.setdefault(f"{how} | {bucket}", {"r1": [], "r10": []})
            r["r1"].append(float(rank == 1))
            r["r10"].append(float(rank is not None))
    quality = {
        k: {
            "n": len(v["cer"]),
            "cer": round(float(np.mean(v["cer"])), 4),
            "word_recall": round(float(np.mean(v["word_recall"])), 4),
        }
        for k, v in per.items()
    }
    by_kind: dict[str, list[float]] = {}
    for lab in labels:
        by_kind.setdefault(lab["kind"], []).append(
            float(lab["word"].lower() in (recs[lab["file"]]["ocr_text"] or "").lower())
        )
    recall = {
        k: {
            "n": len(v["r1"]),
            "recall@1": round(float(np.mean(v["r1"])), 4),
            "recall@10": round(float(np.mean(v["r10"])), 4),
        }
        for k, v in sorted(retrieval.items())
    }
    gate_lost = sum(1 for lab in labels if (recs[lab["file"]]["ocr_text"] or "") == "")
    base = speed["index"]["images_per_s"]
    payload = {
        "settings": {
            "per_condition": args.per_condition,
            "text_images": len(labels),
            "rare_images": args.rare,
            "engine": args.engine,
            "ocr_workers": settings.ocr_workers,
            "ocr_threads": settings.ocr_threads,
            "min_confidence": settings.ocr_min_confidence,
            "gate_threshold": settings.ocr_gate_threshold,
            "itc_model": "random base-size BLIP" if args.model is None else str(args.model),
            "precision": settings.precision,
            "cpu_flags": cpu_flags(),
        },
        "throughput_text_free": speed,
        "text_set_index_seconds": round(text_seconds, 2),
        "quality_by_condition": quality,
        "word_recall_by_kind": {k: round(float(np.mean(v)), 4) for k, v in by_kind.items()},
        "retrieval": recall,
        "text_images_with_no_ocr_text": gate_lost,
        "ocr_failures": rep.ocr_failures,
    }
    write_result("ocr", payload)
    m = machine()
    lines = [
        "## OCR (scripts/bench/ocr.py)",
        "",
        f"Machine: {machine_line(m)}; CPU flags: {', '.join(cpu_flags()) or 'none of avx2/avx512'}. "
        f"Engine {args.engine} (PP-OCRv4 det+rec from rapidocr-onnxruntime), {settings.ocr_workers} OCR worker x "
        f"{settings.ocr_threads} ORT thread, threshold {settings.ocr_min_confidence}. "
        f"{len(labels)} rendered text images ({args.per_condition} per condition; English words, numbers, mixed case, "
        f"Chinese in turn), 480-ish px wide; embedder precision {settings.precision}.",
        "",
        "| condition | n | CER | word recall |",
        "|---|---|---|---|",
        *[f"| {k} | {v['n']} | {v['cer']:.3f} | {v['word_recall']:.2f} |" for k, v in quality.items()],
        "",
        "Word recall by kind: " + ", ".join(f"{k} {v:.2f}" for k, v in payload["word_recall_by_kind"].items()) + ".",
        "",
        f"Text-query retrieval (query = the image's word; ITC = {payload['settings']['itc_model']}, random weights, "
        "so chance level):",
        "",
        "| search | words | n | recall@1 | recall@10 |",
        "|---|---|---|---|---|",
        *[
            f"| {k.split(' | ')[0]} | {k.split(' | ')[1]} | {v['n']} | {v['recall@1']:.2f} | {v['recall@10']:.2f} |"
            for k, v in recall.items()
        ],
        "",
        f"Index throughput on {args.rare} text-free textured photos (480x320 JPEG), same run:",
        "",
        "| run | images/s | seconds | cost vs no OCR |",
        "|---|---|---|---|",
        *[
            f"| {k} | {v['images_per_s']:.2f} | {v['seconds']:.1f} | {base / v['images_per_s']:.2f}x |"
            for k, v in speed.items()
        ],
    ]
    update_markdown("ocr", "\n".join(lines))
    print(json.dumps({k: payload[k] for k in ("throughput_text_free", "retrieval", "word_recall_by_kind")}, indent=1))


def base_blip(out: Path) -> Path:
    """Only the retrieval checkpoint of make_test_models' base size (random weights)."""
    import make_test_models as mtm

    if not (out / "config.json").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            tok = mtm.make_tokenizer(Path(tmp), 30524, 0)
            mtm.make_blip(out, "base", 0, tok)
    return out


if __name__ == "__main__":
    main()
