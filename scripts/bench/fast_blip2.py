#!/usr/bin/env python
"""BLIP-2 (ViT-g) ``exact`` vs ``fast``: image tower + Q-Former speed and fidelity, one run.

Base-size random BLIP-2 retrieval model (the default ``Blip2Config``: ViT-g/14 at 224 px, 39
layers, width 1408; Q-Former 12 layers, 32 queries; random weights cost what trained ones do),
saved with safetensors and loaded through ``models.load_embedder``. In the same run:

* img/s of the naive fp32 transformers loop (PIL full decode, processor, ``vision_model`` +
  ``qformer`` + ``vision_projection``), ``blipsearch index`` internals with ``exact`` and with
  ``fast`` (the product's plan), and the image tower on OpenVINO bf16 (converted here, the
  runtime BLIP's ``fast`` uses) for the comparison that picked the runtime;
* whole processes ``blipsearch index DIR --collection C --model M --precision exact|fast`` on
  N large generated JPEGs;
* fidelity of ``fast`` against the naive fp32 forward: per-vector cosine of all 32 query vectors
  on the same pixels, and with the JPEG draft decode ``fast`` uses when PDQ hashing is off;
  top-10 overlap of text->image search (max over the 32 vectors) and the largest score change.

    python scripts/bench/fast_blip2.py [--n 8] [--n-fid 16] [--no-openvino] [--base-dir DIR]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, gemm, machine, machine_line, update_markdown, write_result

BOUND_COS = 0.999
SIZES = [(2048, 1536), (1600, 1200), (1280, 960)]


def base_blip2(cache: Path | None = None) -> Path:
    """A randomly initialised base-size BLIP-2 retrieval checkpoint (default ``Blip2Config``)."""
    out = (cache or RESULTS / "models" / "base") / "blip2-itm"
    if (out / "config.json").is_file():
        return out
    import torch
    from make_test_models import make_tokenizer
    from transformers import Blip2Config, Blip2ForImageTextRetrieval, Blip2Processor, BlipImageProcessor

    from models.test_checkpoints import mark_random

    with tempfile.TemporaryDirectory() as tmp:
        tok = make_tokenizer(Path(tmp), 30524, 0)  # BERT-base vocabulary size, as the hub tokenizer
        cfg = Blip2Config(
            # transformers' ViT-g default initializer_range is 1e-10 (trained weights replace it): the
            # tower would output a constant, and every fidelity number would be trivially perfect.
            vision_config={"initializer_range": 0.02},
            qformer_config={"vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "use_qformer_text_input": True},
            num_query_tokens=32,
            image_text_hidden_size=256,
        )
        torch.manual_seed(0)
        model = Blip2ForImageTextRetrieval(cfg).eval()
        # transformers initialises the query tokens to zeros, which makes all 32 query outputs
        # equal; trained ones differ (LAVIS initialises them N(0, 0.02)), so draw them.
        with torch.no_grad():
            model.query_tokens.normal_(0.0, cfg.initializer_range)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)  # safetensors
        side = cfg.vision_config.image_size
        Blip2Processor(
            image_processor=BlipImageProcessor(size={"height": side, "width": side}), tokenizer=tok
        ).save_pretrained(out)
    mark_random(out, made_by="scripts/bench/fast_blip2.py")
    return out


def vit_gflop(cfg: Any) -> float:
    n = (cfg.image_size // cfg.patch_size) ** 2 + 1
    d, m = cfg.hidden_size, cfg.intermediate_size
    per_layer = 2 * n * (4 * d * d + 2 * d * m) + 4 * n * n * d
    return (cfg.num_hidden_layers * per_layer + 2 * (n - 1) * 3 * cfg.patch_size**2 * d) / 1e9


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def scores(texts: Any, vecs: Any) -> Any:
    """[texts, images]: max over each image's query vectors, as BLIP-2 scores."""
    import numpy as np

    return np.einsum("td,iqd->tiq", texts, vecs).max(-1)


def fidelity(ref_t: Any, ref_v: Any, t: Any, v: Any, k: int = 10) -> dict[str, float]:
    import numpy as np

    cos = (ref_v * v).sum(-1).reshape(-1)
    s0, s1 = scores(ref_t, ref_v), scores(t, v)
    kk = min(k, s0.shape[1] // 2)  # at most half the images, or the overlap is vacuous
    top0, top1 = np.argsort(-s0, 1)[:, :kk], np.argsort(-s1, 1)[:, :kk]
    overlap = [len(set(a) & set(b)) / kk for a, b in zip(top0, top1, strict=True)]
    return {
        "cos_min": float(cos.min()),
        "cos_p1": float(np.percentile(cos, 1)),
        "cos_mean": float(cos.mean()),
        "vectors": int(cos.size),
        f"top{kk}_overlap_mean": float(np.mean(overlap)),
        f"top{kk}_overlap_min": float(np.min(overlap)),
        "max_score_diff": float(np.abs(s0 - s1).max()),
        "holds": bool(cos.min() >= BOUND_COS),
    }


def openvino_tower(emb: Any, pixels: Any, ref: Any, batch: int) -> dict[str, Any]:
    """Convert ViT-g + Q-Former + projection to OpenVINO, compile with the bf16 hint, time it."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from models.openvino_runtime import compile_config, import_openvino

    m = emb.model

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vision_model, self.qformer, self.proj = m.vision_model, m.qformer, m.vision_projection
            self.query_tokens = m.query_tokens

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            tokens = self.vision_model(pixel_values=pixel_values).last_hidden_state
            q = self.query_tokens.expand(tokens.shape[0], -1, -1)
            mask = torch.ones(tokens.shape[:-1], dtype=torch.long)
            out = self.qformer(query_embeds=q, encoder_hidden_states=tokens, encoder_attention_mask=mask)
            return F.normalize(self.proj(out.last_hidden_state), dim=-1)

    ov = import_openvino()
    side = m.config.vision_config.image_size
    t0 = time.perf_counter()
    with torch.no_grad():
        om = ov.convert_model(
            Tower().eval(), example_input=(torch.zeros(2, 3, side, side),), input=[ov.PartialShape([-1, 3, side, side])]
        )
    convert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    req = (
        ov.Core().compile_model(om, "CPU", compile_config("bf16", torch.get_num_threads(), None)).create_infer_request()
    )
    compile_s = time.perf_counter() - t0
    req.infer([np.ascontiguousarray(pixels[:batch])])  # warm-up
    t0 = time.perf_counter()
    out = [
        np.asarray(req.infer([np.ascontiguousarray(pixels[i : i + batch])])[0]) for i in range(0, len(pixels), batch)
    ]
    dt = time.perf_counter() - t0
    vecs = np.concatenate(out)
    cos = (ref * vecs).sum(-1)
    return {
        "convert_s": convert_s,
        "compile_s": compile_s,
        "img_s": len(pixels) / dt,
        "cos_min_same_pixels": float(cos.min()),
        "max_rss_gb": rss_gb(),
    }


def tiny_fidelity(files: list[Path], texts: list[str], tmp: Path) -> dict[str, Any]:
    """The same fidelity numbers on the tiny BLIP-2 of the tests (query tokens drawn at random),
    on its own ``files`` (the tiny model is cheap: more images make the top-10 overlap mean more)."""
    import torch
    from make_test_models import make_all
    from transformers import Blip2ForImageTextRetrieval

    from media.decode import decode_image
    from models import load_embedder

    path = make_all(tmp / "tiny", only=["blip2-itm"])["blip2-itm"]
    model = Blip2ForImageTextRetrieval.from_pretrained(path).eval()
    torch.manual_seed(7)
    with torch.no_grad():
        model.query_tokens.normal_(0.0, 1.0)
    model.save_pretrained(path)
    exact = load_embedder(str(path), device="cpu", batch_size=8, precision="exact")
    fast = load_embedder(str(path), device="cpu", batch_size=8, precision="fast")
    side = int(exact.input_size or 32)
    full = exact.preprocess([decode_image(p.read_bytes(), 10**9).image for p in files])
    draft = exact.preprocess([decode_image(p.read_bytes(), 10**9, draft=side).image for p in files])
    ref_v, ref_t = exact.embed_pixels(full), exact.embed_texts(texts)
    fast_v, fast_t = fast.embed_pixels(full), fast.embed_texts(texts)
    return {
        "fast, same pixels (full decode)": fidelity(ref_t, ref_v, fast_t, fast_v),
        "fast with JPEG draft vs exact full decode": fidelity(ref_t, ref_v, fast_t, fast.embed_pixels(draft)),
        "draft vs full decode, both exact (the decode alone)": fidelity(ref_t, ref_v, ref_t, exact.embed_pixels(draft)),
    }


def whole_process(folder: Path, model: Path, precision: str, tmp: Path) -> dict[str, Any]:
    env = dict(os.environ, BLIPSEARCH_DATA_DIR=str(tmp / f"data-{precision}"), HF_HUB_OFFLINE="1")
    exe = Path(sys.executable).parent / "blipsearch"
    cmd = [str(exe), "index", str(folder), "--collection", "b2", "--model", str(model), "--precision", precision]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return {"wall_s": wall, "cmd": " ".join(["blipsearch", *cmd[1:]]), "output_tail": proc.stdout[-600:]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from blipsearch.config import Settings
    from blipsearch.synthetic import make_image
    from media.decode import decode_image
    from models import load_embedder
    from models.precision import cpu_flags
    from service.indexing import index_paths

    if args.threads:
        torch.set_num_threads(args.threads)
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"})
    res: dict[str, Any] = {
        "cpu_flags": flags,
        "n": args.n,
        "n_fid": args.n_fid,
        "n_inproc": args.n_inproc,
        "n_tiny": args.n_tiny,
        "batch": args.batch,
        "loadavg_start": os.getloadavg(),
    }
    res["gemm_gflops"] = {"fp32": gemm(torch.float32), "bf16": gemm(torch.bfloat16)}
    path = base_blip2(args.base_dir)
    words = "red blue green yellow circle square stripes dots large small".split()
    texts = [f"a photo of a {words[i % 10]} {words[(i * 3) % 10]} number {i}" for i in range(32)]
    idx: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        fid_dir, proc_dir, small_dir = tmp / "fid", tmp / "proc", tmp / "inproc"
        for d in (fid_dir, proc_dir, small_dir):
            d.mkdir()
        files = []
        for i in range(max(args.n, args.n_fid)):
            img = make_image(i, SIZES[i % 3])
            if i < args.n_fid:
                files.append(fid_dir / f"{i:04d}.jpg")
                img.save(files[-1], "JPEG", quality=90)
            if i < args.n:
                img.save(proc_dir / f"{i:04d}.jpg", "JPEG", quality=90)
            if i < args.n_inproc:
                img.save(small_dir / f"{i:04d}.jpg", "JPEG", quality=90)

        # -- exact: the naive transformers loop (the fp32 reference) and blipsearch exact ------
        t0 = time.perf_counter()
        emb = load_embedder(str(path), device="cpu", batch_size=args.batch, precision="exact")
        res["load_s"] = {"exact": time.perf_counter() - t0}
        res["exact_plan"] = emb.plan.describe()  # type: ignore[attr-defined]
        model, proc = emb.model, emb.processor  # type: ignore[attr-defined]
        res["vit_gflop_per_image"] = vit_gflop(model.config.vision_config)
        ref = []
        t0 = time.perf_counter()
        for s in range(0, len(files), args.batch):
            imgs = [Image.open(p).convert("RGB") for p in files[s : s + args.batch]]
            with torch.no_grad():
                px = proc(images=imgs, return_tensors="pt")["pixel_values"]
                tokens = model.vision_model(pixel_values=px).last_hidden_state
                q = model.query_tokens.expand(tokens.shape[0], -1, -1)
                out = model.qformer(query_embeds=q, encoder_hidden_states=tokens).last_hidden_state
                ref.append(F.normalize(model.vision_projection(out), dim=-1).numpy())
        idx["naive_fp32"] = len(files) / (time.perf_counter() - t0)
        ref_v = np.concatenate(ref)
        ref_t = emb.embed_texts(texts)
        print("naive", idx["naive_fp32"], flush=True)
        full_px = emb.preprocess([decode_image(p.read_bytes(), 10**9).image for p in files])
        side = int(emb.input_size or 224)
        draft_px = emb.preprocess([decode_image(p.read_bytes(), 10**9, draft=side).image for p in files])

        def index_in_process(e: Any, precision: str) -> float:
            settings = Settings(
                data_dir=tmp / f"inproc-{precision}",
                batch_size=args.batch,
                decode_workers=2,
                decode_mode="thread",
                precision=precision,
            )
            t0 = time.perf_counter()
            report = index_paths(settings, [small_dir], "bench", embedder=e, progress=False)
            assert report.added == args.n_inproc, report.failures
            return args.n_inproc / (time.perf_counter() - t0)

        idx["exact"] = index_in_process(emb, "exact")
        print("exact", idx["exact"], flush=True)
        res["max_rss_gb_exact"] = rss_gb()
        del emb, model, proc
        gc.collect()

        # -- fast: the product's plan, loaded through the same path ----------------------------
        t0 = time.perf_counter()
        fast = load_embedder(str(path), device="cpu", batch_size=args.batch, precision="fast")
        res["load_s"]["fast"] = time.perf_counter() - t0
        res["fast_plan"] = fast.plan.describe()  # type: ignore[attr-defined]
        res["fast_stage_dtypes"] = fast.stage_dtypes()
        res["fast_stage_runtimes"] = fast.stage_runtimes()
        fast.embed_pixels(full_px[:2])  # warm-up
        t0 = time.perf_counter()
        fast_v = np.concatenate(
            [fast.embed_pixels(full_px[i : i + args.batch]) for i in range(0, len(files), args.batch)]
        )
        idx["fast_model_only"] = len(files) / (time.perf_counter() - t0)
        fast_draft_v = np.concatenate(
            [fast.embed_pixels(draft_px[i : i + args.batch]) for i in range(0, len(files), args.batch)]
        )
        fast_t = fast.embed_texts(texts)
        # How different an image's 32 query vectors are (mean pairwise cosine; 1.0 = all equal)
        gram = np.einsum("iqd,ird->iqr", ref_v, ref_v)
        nq = gram.shape[1]
        res["query_vector_mean_pairwise_cos"] = float((gram.sum((1, 2)) - nq).mean() / (nq * (nq - 1)))
        res["fidelity"] = {
            "fast, same pixels (full decode)": fidelity(ref_t, ref_v, fast_t, fast_v),
            "fast with JPEG draft vs exact full decode": fidelity(ref_t, ref_v, fast_t, fast_draft_v),
            "draft vs full decode, both fast (the decode alone)": fidelity(fast_t, fast_v, fast_t, fast_draft_v),
        }
        print(res["fidelity"], flush=True)
        idx["fast"] = index_in_process(fast, "fast")
        print("fast", idx["fast"], flush=True)
        res["max_rss_gb_fast"] = rss_gb()
        if not args.no_openvino:
            try:
                res["openvino_bf16"] = openvino_tower(fast, full_px, ref_v, args.batch)
            except Exception as exc:  # noqa: BLE001 - a failed comparison is reported, not fatal
                res["openvino_bf16"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            print(res["openvino_bf16"], flush=True)
        del fast
        gc.collect()
        res["indexing_img_s"] = idx
        tiny_files = []
        for i in range(args.n_tiny):
            tiny_files.append(tmp / f"tiny-{i:04d}.jpg")
            make_image(100 + i, SIZES[i % 3]).save(tiny_files[-1], "JPEG", quality=90)
        res["fidelity_tiny"] = tiny_fidelity(tiny_files, texts, tmp)
        print(res["fidelity_tiny"], flush=True)
        write_result("fast_blip2", res)

        # -- whole processes -------------------------------------------------------------------
        procs = {}
        for precision in ("exact", "fast"):
            procs[precision] = whole_process(proc_dir, path, precision, tmp)
            print(precision, procs[precision], flush=True)
        res["whole_process"] = procs
        res["whole_process_speedup"] = procs["exact"]["wall_s"] / procs["fast"]["wall_s"]
    res["loadavg_end"] = os.getloadavg()
    return res


def markdown(r: dict[str, Any]) -> str:
    m = r.get("machine") or machine()
    idx, g = r["indexing_img_s"], r["gemm_gflops"]
    wp = r.get("whole_process", {})
    la0, la1 = r["loadavg_start"], r.get("loadavg_end", [float("nan")] * 3)
    gf = r["vit_gflop_per_image"]
    lines = [
        "### BLIP-2 (ViT-g) image tower + Q-Former: `exact` vs `fast` (scripts/bench/fast_blip2.py)",
        "",
        f"Machine: {machine_line(m)}; CPU flags: {', '.join(r['cpu_flags'])}. Base-size random BLIP-2 "
        f"(default `Blip2Config`: ViT-g/14 at 224 px, 39 layers, width 1408; Q-Former 12 layers, 32 queries; "
        f"{gf:.0f} GFLOP per image in the ViT), safetensors, loaded with `models.load_embedder`. "
        f"Load average (1/5/15 min) before: {la0[0]:.2f} / {la0[1]:.2f} / {la0[2]:.2f}, after: "
        f"{la1[0]:.2f} / {la1[1]:.2f} / {la1[2]:.2f} (above 2 means other work shared the 2 cores: read ratios). "
        f"GEMM 2048³: fp32 {g['fp32']:.0f}, bf16 {g['bf16']:.0f} GFLOP/s. `fast` plan: {r['fast_plan']}; "
        f"runtimes {r.get('fast_stage_runtimes')}. Peak RSS: exact {r.get('max_rss_gb_exact', 0):.1f} GB, "
        f"fast {r.get('max_rss_gb_fast', 0):.1f} GB. The query tokens are drawn N(0, 0.02) (transformers "
        "initialises them to zeros, which would make the 32 vectors equal); mean pairwise cosine of an "
        f"image's 32 exact vectors: {r.get('query_vector_mean_pairwise_cos', float('nan')):.3f}.",
        "",
        "| image path | img/s | × naive |",
        "|---|---|---|",
    ]
    labels = {
        "naive_fp32": f"naive fp32 transformers loop ({r['n_fid']} JPEGs)",
        "exact": f"blipsearch index internals, exact ({r.get('n_inproc', '?')} JPEGs)",
        "fast": f"blipsearch index internals, fast ({r.get('n_inproc', '?')} JPEGs)",
        "fast_model_only": "fast, model only (preprocessed pixels)",
    }
    for k, label in labels.items():
        if k in idx:
            lines.append(f"| {label} | {idx[k]:.3f} | {idx[k] / idx['naive_fp32']:.2f}× |")
    ov = r.get("openvino_bf16")
    if ov and "img_s" in ov:
        lines.append(f"| OpenVINO bf16 hint, model only | {ov['img_s']:.3f} | {ov['img_s'] / idx['naive_fp32']:.2f}× |")
    if ov:
        if "img_s" in ov:
            lines.append(
                f"\nOpenVINO bf16 of the same tower: {ov['img_s'] / idx['fast_model_only']:.2f}× torch bf16 autocast "
                f"model-only, min cosine {ov['cos_min_same_pixels']:.5f}; one-off conversion {ov['convert_s']:.0f} s, "
                f"compile {ov['compile_s']:.1f} s, peak RSS {ov['max_rss_gb']:.1f} GB."
            )
        else:
            lines.append(f"\nOpenVINO bf16 comparison failed: {ov['error']}")
    if wp:
        lines += [
            "",
            f"| whole process, {r['n']} JPEGs (1280×960 – 2048×1536) | wall s |",
            "|---|---|",
        ]
        for k, v in wp.items():
            lines.append(f"| `{v['cmd'].split(' --model')[0]} --precision {k}` | {v['wall_s']:.1f} |")
        lines.append(
            f"\n`fast` / `exact`, whole `index` processes: **{r['whole_process_speedup']:.2f}×** (goal ≥ 2.5×)."
        )
    lines += [
        "",
        fidelity_header(r["fidelity"], r["n_fid"]),
        "|---|---|---|---|---|---|",
    ]
    lines += fidelity_rows(r["fidelity"])
    fast_ok = all(f["holds"] for k, f in r["fidelity"].items() if k.startswith("fast"))
    lines += [
        "",
        "Reading: the shipped `fast` image stage of BLIP-2 is torch bf16 autocast on the ViT-g with the "
        "Q-Former in fp32 (the Q-Former is ~5 % of the FLOPs, and a bf16 Q-Former missed the bound on the "
        "tiny model: min cosine 0.9980 in tests/test_fast_blip2.py); on the base model it "
        f"{'holds' if fast_ok else 'MISSES'} the 0.999 per-vector cosine "
        "bound with and without JPEG drafts (drafts miss on the tiny model, whose 32-px input makes the "
        "draft decode itself differ, fp32 on both sides; `index` draft-decodes only with PDQ hashing off). "
        "OpenVINO bf16 runs the same tower faster per image (table), but it is not wired in: its conversion "
        "costs a one-off minute and a peak RSS well above the torch model's, once per data directory, which "
        "the first `index` process of a few images does not earn back; with a warm IR cache (as BLIP's) later "
        "processes would gain (not measured as whole processes here). That is the next step for large runs.",
    ]
    if r.get("fidelity_tiny"):
        note = "The tiny BLIP-2 of the tests (width 32, query tokens drawn N(0, 1)), its own JPEGs, same texts:"
        lines += ["", note, ""]
        lines.append(fidelity_header(r["fidelity_tiny"], r.get("n_tiny", 32)))
        lines.append("|---|---|---|---|---|---|")
        lines += fidelity_rows(r["fidelity_tiny"])
    lines += ["", f"Reproduce: `python scripts/bench/fast_blip2.py {' '.join(r.get('argv', []))}`."]
    return "\n".join(lines)


def fidelity_header(table: dict[str, dict[str, Any]], n: int) -> str:
    first = next(iter(table.values()))
    ov = next(x for x in first if x.endswith("overlap_mean")).split("_")[0]
    return (
        f"| fidelity vs the naive fp32 forward ({n} images × 32 query vectors, 32 texts) "
        f"| cos min | cos p1 | {ov} text→image overlap mean / min | max score diff | bound (cos ≥ 0.999) |"
    )


def fidelity_rows(table: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    for k, f in table.items():
        ov = next(x for x in f if x.endswith("overlap_mean"))
        overlap = f"{f[ov]:.3f} / {f[ov.replace('mean', 'min')]:.2f}"
        rows.append(
            f"| {k} | {f['cos_min']:.5f} | {f['cos_p1']:.5f} | {overlap} "
            f"| {f['max_score_diff']:.4f} | {'holds' if f['holds'] else 'MISSES'} |"
        )
    return rows


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8, help="JPEGs for the whole-process index runs")
    ap.add_argument("--n-fid", type=int, default=10, help="JPEGs for the naive loop and the fidelity numbers")
    ap.add_argument("--n-inproc", type=int, default=2, help="JPEGs for the in-process index timings")
    ap.add_argument("--n-tiny", type=int, default=32, help="JPEGs for the tiny model's fidelity numbers")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-openvino", action="store_true", help="skip the OpenVINO comparison")
    ap.add_argument("--base-dir", type=Path, default=None)
    ap.add_argument("--device", default="cpu", help="accepted for run_all.py; a CPU benchmark")
    return ap.parse_args(argv)


def main() -> None:
    args = parse()
    res = run(args)
    res["argv"] = sys.argv[1:]
    write_result("fast_blip2", res)
    res["machine"] = machine()
    update_markdown("fast_blip2", markdown(res))


if __name__ == "__main__":
    main()
