#!/usr/bin/env python
"""Fidelity of the ``fast`` precision mode against ``exact``, per model stage.

On the same images and texts, for the base-size random BLIP and the tiny test models:

* image embeddings: ``exact`` (full JPEG decode, fp32) vs ``fast`` (JPEG draft decode + the
  fast model), per-vector cosine min / 1st percentile; also the model alone (same pixels);
* text embeddings: cosine min / 1st percentile;
* text→image: top-10 overlap and the largest score difference;
* ITM: largest P(match) difference (recomputed vision tokens);
* captions: the generation bound of evaluation/fidelity.py (teacher-forced mean |Δ log p| per
  token and top-1 agreement at decisive positions); identical greedy captions reported beside it;
* ``blipsearch eval retrieval --no-itm`` (ITC TR@1 / IR@1) on a generated eval set, run as the
  CLI with ``--precision exact`` and ``--precision fast`` (the fast model and JPEG drafts).

Every stage is measured with torch bf16 autocast on (even those the default plan keeps exact,
``BLIPSEARCH_FAST_RUNTIME=torch``), so the decision which stages run fast by default
(models/precision.py DEFAULT_FAST_STAGES) rests on these numbers. Then the product's ``fast``
path as shipped (``BLIPSEARCH_FAST_RUNTIME=auto``: BLIP's image and text stages on OpenVINO bf16
where the CPU has native bf16) is measured the same way against ``exact``: image / text cosine,
top-10 overlap, score difference and TR@1 / IR@1 through the CLI. Bounds: cosine ≥ 0.999,
TR@1/IR@1 within 0.5 points, ITM P(match) within 0.01, captions: mean |Δ log p| ≤ 0.05 nats and
decisive top-1 agreement ≥ 99 % (why not identical strings: evaluation/fidelity.py).

    python scripts/bench/fidelity.py [--quick] [--models base tiny] [--n 32]
"""

from __future__ import annotations

import argparse
import atexit
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, base_model, machine, machine_line, update_markdown, write_result

from evaluation.fidelity import DECISIVE_AGREEMENT_BOUND, MEAN_ABS_DLOGP_BOUND

COS_BOUND, POINTS_BOUND, ITM_BOUND = 0.999, 0.5, 0.01
COLORS = ["red", "green", "blue", "yellow", "black", "white"]
SHAPES = ["square", "circle", "stripe", "triangle"]


def texts_for(n: int) -> list[str]:
    return [
        f"a {COLORS[i % 6]} {SHAPES[(i // 6) % 4]} on a {COLORS[(i + 2) % 6]} background, view {i}" for i in range(n)
    ]


def jpegs(n: int, large: bool) -> list[bytes]:
    from blipsearch.synthetic import make_image

    sizes = [(1024, 768), (1600, 1200), (1280, 960)] if large else [(160, 120), (96, 128)]
    out = []
    for i in range(n):
        buf = io.BytesIO()
        make_image(i, sizes[i % len(sizes)]).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def cos_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a = a.reshape(-1, a.shape[-1])
    b = b.reshape(-1, b.shape[-1])
    c = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    return {"min": float(c.min()), "p1": float(np.percentile(c, 1)), "mean": float(c.mean())}


def scores(t: np.ndarray, i: np.ndarray) -> np.ndarray:
    """[texts, images] ITC scores (max over BLIP-2's query vectors)."""
    i3 = i.reshape(len(i), -1, i.shape[-1])
    return np.einsum("td,nvd->tnv", t, i3).max(axis=2)


def embed_metrics(
    path: Path, data: list[bytes], texts: list[str], device: str, runtime: str = "torch", candidate: bool = True
) -> dict[str, Any]:
    """``candidate``: bf16 on every torch stage (the candidate plan); else the default plan."""
    import torch

    from media.decode import decode_image
    from models import load_embedder, load_itm
    from models.itm import softmax_match
    from models.precision import STAGES, plan_precision

    exact = load_embedder(str(path), device=device, batch_size=8, precision="exact")
    fast = load_embedder(
        str(path),
        device=device,
        batch_size=8,
        precision="fast",
        fast_runtime=runtime,
        runtime_cache_dir=os.environ.get("BLIPSEARCH_RUNTIME_CACHE_DIR"),
    )
    if candidate:
        fast.plan = plan_precision("fast", torch.device(fast.device), fast_stages=STAGES)  # type: ignore[attr-defined]
    side = exact.input_size
    full = exact.preprocess([decode_image(d, 10**9).image for d in data])
    draft = exact.preprocess([decode_image(d, 10**9, side).image for d in data])

    def batched(fn: Any, x: np.ndarray) -> np.ndarray:
        return np.concatenate([fn(x[i : i + 8]) for i in range(0, len(x), 8)])

    t0 = time.perf_counter()
    ie = batched(exact.embed_pixels, full)
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    i_model = batched(fast.embed_pixels, full)
    t_fast = time.perf_counter() - t0
    i_fast = batched(fast.embed_pixels, draft)
    te, tf = exact.embed_texts(texts), fast.embed_texts(texts)
    se, sf = scores(te, ie), scores(tf, i_fast)
    k = min(10, len(data))
    top_e, top_f = np.argsort(-se, axis=1)[:, :k], np.argsort(-sf, axis=1)[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top_e, top_f, strict=True)]
    # ITM: a few texts against up to 16 images, tokens recomputed from the full decode (the
    # candidate plan), or (the shipped path) the fp16 tokens the indexer stores in the ITM
    # feature cache, which come from the fast image stage (OpenVINO there).
    se_itm, sf_itm = load_itm(exact), load_itm(fast)
    m = min(16, len(data))
    if candidate:
        tok_e = se_itm.vision_tokens(full[:m])
        tok_f = sf_itm.vision_tokens(full[:m])
    else:
        tok_e = torch.from_numpy(exact.embed_pixels_with_tokens(full[:m])[1])
        tok_f = torch.from_numpy(fast.embed_pixels_with_tokens(full[:m])[1])
    itm_diff = max(
        float(
            np.abs(
                softmax_match(se_itm.score_text_vs_images(t, tok_e))
                - softmax_match(sf_itm.score_text_vs_images(t, tok_f))
            ).max()
        )
        for t in texts[:4]
    )
    return {
        "images": len(data),
        "texts": len(texts),
        "fast_plan": fast.plan.describe(),  # type: ignore[attr-defined]
        "fast_runtimes": fast.stage_runtimes(),
        "image_cos_model_only": cos_stats(ie, i_model),
        "image_cos_pipeline": cos_stats(ie, i_fast),
        "text_cos": cos_stats(te, tf),
        "top10_overlap_mean": float(np.mean(overlap)),
        "top10_overlap_min": float(np.min(overlap)),
        "score_max_diff": float(np.abs(se - sf).max()),
        "itm_prob_max_diff": itm_diff,
        "image_forward_s": {"exact": t_exact, "fast": t_fast},
    }


def caption_metrics(path: Path, data: list[bytes], device: str) -> dict[str, Any]:
    """The generation bound (evaluation/fidelity.py): teacher-forced log-probabilities of the
    exact model's greedy caption under both models, and top-1 agreement at decisive positions;
    identical greedy captions and token agreement are reported beside it."""
    import torch

    from evaluation.fidelity import generation_fidelity, greedy_agreement
    from media.decode import decode_image
    from models.captioners import Decoding, load_captioner
    from models.precision import STAGES, plan_precision

    exact = load_captioner(str(path), device=device, batch_size=8, precision="exact")
    fast = load_captioner(str(path), device=device, batch_size=8, precision="fast")
    dev = torch.device(device if device != "auto" else "cpu")
    fast.plan = plan_precision("fast", dev, flags=None if dev.type == "cuda" else {"avx512_bf16"}, fast_stages=STAGES)
    pixels = exact.preprocess([decode_image(d, 10**9).image for d in data])
    dec = Decoding(max_new_tokens=20)
    tokens, logits = exact.greedy_logits(pixels, dec)
    forced = fast.forced_logits(pixels, tokens)
    free, _ = fast.greedy_logits(pixels, dec)
    eos = exact.eos_token_ids
    ce, cf = exact.caption_pixels(pixels, dec), fast.caption_pixels(pixels, dec)
    same = [a == b for a, b in zip(ce, cf, strict=True)]
    return {
        "captions": len(ce),
        "teacher_forced": generation_fidelity(tokens.numpy(), logits.numpy(), forced.numpy(), eos).as_dict(),
        "greedy_token_agreement": greedy_agreement(tokens.numpy(), free.numpy(), eos),
        "identical": float(np.mean(same)),
        "examples": [{"exact": a, "fast": b} for a, b, s in zip(ce, cf, same, strict=True) if not s][:3],
    }


def eval_retrieval(
    path: Path, data: list[bytes], texts: list[str], precision: str, runtime: str = "torch"
) -> dict[str, float]:
    """``blipsearch eval retrieval --precision P --no-itm`` on a generated set (2 captions per image),
    with ``BLIPSEARCH_FAST_RUNTIME=runtime``."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        lines = []
        for i, d in enumerate(data):
            (root / "images" / f"{i:04d}.jpg").write_bytes(d)
            caps = [texts[i % len(texts)], f"picture {i}: {texts[(i + 1) % len(texts)]}"]
            lines.append(json.dumps({"image": f"{i:04d}.jpg", "captions": caps}))
        (root / "ann.jsonl").write_text("\n".join(lines) + "\n")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "BLIPSEARCH_FAST_RUNTIME": runtime}
        env.setdefault("BLIPSEARCH_DATA_DIR", str(root / "data"))
        cmd = [sys.executable, "-m", "cli", "eval", "retrieval", "--precision", precision]
        cmd += ["--annotations", str(root / "ann.jsonl"), "--images", str(root / "images"), "--split", ""]
        cmd += ["--no-itm", "--model", str(path), "--json"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, check=True)
    itc = json.loads(out.stdout)["itc"]
    return {"tr_r1": itc["tr_r1"], "ir_r1": itc["ir_r1"], "r_mean": itc["r_mean"]}


def verdicts(r: dict[str, Any]) -> dict[str, bool]:
    out = {
        "image": r["image_cos_pipeline"]["p1"] >= COS_BOUND and r["image_cos_pipeline"]["min"] >= COS_BOUND,
        "text": r["text_cos"]["min"] >= COS_BOUND,
    }
    if "itm_prob_max_diff" in r:
        out["itm"] = r["itm_prob_max_diff"] <= ITM_BOUND
    if "eval" in r:
        e, f = r["eval"]["exact"], r["eval"]["fast"]
        out["eval"] = abs(e["tr_r1"] - f["tr_r1"]) <= POINTS_BOUND and abs(e["ir_r1"] - f["ir_r1"]) <= POINTS_BOUND
    if "caption" in r:
        out["caption"] = bool(r["caption"]["teacher_forced"]["holds"])
    return out


def run_model(name: str, path: Path, caption: Path | None, n: int, large: bool, device: str) -> dict[str, Any]:
    data = jpegs(n, large)
    texts = texts_for(n)
    t0 = time.perf_counter()
    r: dict[str, Any] = {"model": name, **embed_metrics(path, data, texts, device)}
    r["eval"] = {p: eval_retrieval(path, data, texts, p) for p in ("exact", "fast")}
    # The shipped fast path (auto runtime, default plan), where it differs from torch.
    product = embed_metrics(path, data, texts, device, runtime="auto", candidate=False)
    if "openvino" in product["fast_runtimes"].values():
        product["eval"] = {"exact": r["eval"]["exact"], "fast": eval_retrieval(path, data, texts, "fast", "auto")}
        r["product"] = product
        r["product_verdicts"] = verdicts(product)
    if caption is not None:
        r["caption"] = caption_metrics(caption, data[: min(8, n)], device)
    r["verdicts"] = verdicts(r)
    r["seconds"] = time.perf_counter() - t0
    print(json.dumps(r, indent=1), flush=True)
    return r


def markdown(rows: list[dict[str, Any]], m: dict[str, Any], flags: list[str]) -> str:
    lines = [
        "### Precision fidelity: `fast` vs `exact` (scripts/bench/fidelity.py)",
        "",
        f"Machine: {machine_line(m)}. CPU flags: {', '.join(flags) or 'none of interest'}. "
        "Shared machine (other engineers' jobs ran at the same time): timings here are noisy, the "
        "fidelity numbers are not. First table: torch bf16 autocast on for every stage (the candidate plan; "
        "`fast` on torch for the TR@1/IR@1 columns).",
        "",
        "| model | images | image cos min / p1 (model only) | image cos min / p1 (with JPEG draft) | text cos min "
        "| top-10 overlap mean / min | max score diff | ITM P max diff | TR@1 exact→fast | IR@1 exact→fast "
        "| captions: mean abs dlogp / decisive top-1 agree (share decisive) / identical |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e, f = r["eval"]["exact"], r["eval"]["fast"]
        cap = "-"
        if "caption" in r:
            tf = r["caption"]["teacher_forced"]
            cap = (
                f"{tf['mean_abs_dlogp']:.4f} / {100 * tf['decisive_agreement']:.1f} % "
                f"({100 * tf['decisive_share']:.0f} %) / {100 * r['caption']['identical']:.0f} %"
            )
        lines.append(
            f"| {r['model']} | {r['images']} | {r['image_cos_model_only']['min']:.5f} / "
            f"{r['image_cos_model_only']['p1']:.5f} | {r['image_cos_pipeline']['min']:.5f} / "
            f"{r['image_cos_pipeline']['p1']:.5f} | {r['text_cos']['min']:.5f} | {r['top10_overlap_mean']:.2f} / "
            f"{r['top10_overlap_min']:.1f} | {r['score_max_diff']:.4f} | {r['itm_prob_max_diff']:.4f} | "
            f"{e['tr_r1']:.1f}→{f['tr_r1']:.1f} | {e['ir_r1']:.1f}→{f['ir_r1']:.1f} | {cap} |"
        )
    lines += [
        "",
        "Bound verdicts (image/text cos ≥ 0.999, ITM ≤ 0.01, TR@1/IR@1 ± 0.5, "
        "captions mean |Δ log p| ≤ 0.05 and decisive top-1 ≥ 99 %):",
        "",
    ]
    for r in rows:
        v = ", ".join(f"{k} {'holds' if ok else 'MISSES'}" for k, ok in r["verdicts"].items())
        lines.append(f"- {r['model']}: {v}")
    shipped = [r for r in rows if "product" in r]
    if shipped:
        lines += [
            "",
            "The shipped `fast` path (`BLIPSEARCH_FAST_RUNTIME=auto`, default plan) against `exact`, same "
            "images and texts (captions run on torch as above; ITM runs on torch, here scored on the fp16 "
            "vision tokens the indexer caches, which the OpenVINO image stage produced):",
            "",
            "| model | image / text runtime | image cos min / p1 (model only) | image cos min / p1 (with JPEG draft) "
            "| text cos min / p1 | top-10 overlap mean / min | max score diff | ITM P max diff (cached tokens) "
            "| TR@1 exact→fast | IR@1 exact→fast | verdicts |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in shipped:
            p = r["product"]
            e, f = p["eval"]["exact"], p["eval"]["fast"]
            v = ", ".join(f"{k} {'holds' if ok else 'MISSES'}" for k, ok in r["product_verdicts"].items())
            lines.append(
                f"| {r['model']} | {p['fast_runtimes']['image']} / {p['fast_runtimes']['text']} | "
                f"{p['image_cos_model_only']['min']:.5f} / {p['image_cos_model_only']['p1']:.5f} | "
                f"{p['image_cos_pipeline']['min']:.5f} / {p['image_cos_pipeline']['p1']:.5f} | "
                f"{p['text_cos']['min']:.5f} / {p['text_cos']['p1']:.5f} | {p['top10_overlap_mean']:.2f} / "
                f"{p['top10_overlap_min']:.1f} | {p['score_max_diff']:.4f} | {p['itm_prob_max_diff']:.4f} | "
                f"{e['tr_r1']:.1f}→{f['tr_r1']:.1f} | "
                f"{e['ir_r1']:.1f}→{f['ir_r1']:.1f} | {v} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["base", "tiny"], choices=["base", "tiny"])
    ap.add_argument("--n", type=int, default=32, help="images (and texts) per model")
    ap.add_argument("--quick", action="store_true", help="tiny models, n = 16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--base-dir", type=Path, default=None, help="where the base-size models are (made if missing)")
    args = ap.parse_args()
    if args.quick:
        args.models, args.n = ["tiny"], 16

    from make_test_models import make_all

    from models.precision import NATIVE_BF16_FLAGS, cpu_flags

    flags = sorted(cpu_flags() & (NATIVE_BF16_FLAGS | {"avx2", "avx512f", "avx512_vnni", "amx_int8"}))
    rows = []
    # One OpenVINO IR cache for the run: the CLI evals read what the first load converted.
    if "BLIPSEARCH_RUNTIME_CACHE_DIR" not in os.environ:
        os.environ["BLIPSEARCH_RUNTIME_CACHE_DIR"] = ov_cache = tempfile.mkdtemp(prefix="ov-cache-")
        atexit.register(shutil.rmtree, ov_cache, True)
    if "base" in args.models:
        rows.append(
            run_model(
                "BLIP base (random)",
                base_model(args.base_dir),
                base_model(args.base_dir, which="blip-caption"),
                args.n,
                True,
                args.device,
            )
        )
    if "tiny" in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            tiny = make_all(Path(tmp), size="tiny", seed=0)
            rows.append(
                run_model("BLIP tiny", tiny["blip-itm"], tiny["blip-caption"], max(args.n, 32), False, args.device)
            )
            rows.append(
                run_model("BLIP-2 tiny", tiny["blip2-itm"], tiny["blip2-caption"], max(args.n, 32), False, args.device)
            )
    m = machine()
    write_result(
        "fidelity",
        {
            "cpu_flags": flags,
            "bounds": {
                "cos": COS_BOUND,
                "points": POINTS_BOUND,
                "itm": ITM_BOUND,
                "caption_mean_abs_dlogp": MEAN_ABS_DLOGP_BOUND,
                "caption_decisive_agreement": DECISIVE_AGREEMENT_BOUND,
            },
            "rows": rows,
        },
    )
    update_markdown("fidelity", markdown(rows, m, flags))


if __name__ == "__main__":
    main()
