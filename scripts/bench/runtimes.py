#!/usr/bin/env python
"""CPU runtimes for the BLIP vision and text towers, one run, same CPU.

Compared, each against torch fp32 (the ``exact`` path) in the same run:

* torch fp32 (blipsearch's exact embedder: SDPA attention) and torch bf16 (the ``fast``
  embedder: ``torch.autocast`` bf16 where the CPU has native bf16);
* ONNX Runtime fp32, int8 dynamic quantization (weights int8, activations quantized per
  batch) and int8 static quantization (QDQ, calibrated on a few batches);
* OpenVINO fp32, bf16 (inference precision hint) and int8 (the static QDQ model).

The towers are exported here with ``torch.onnx.export`` (optimum has no BLIP exporter):
vision = ``normalize(vision_proj(vision_model(pixels)[:, 0]))``, text =
``normalize(text_proj(text_encoder(ids, mask)[:, 0]))``, i.e. exactly the ITC embeddings.
Fidelity is the minimum cosine of each runtime's embeddings against torch fp32.

    python scripts/bench/runtimes.py [--quick] [--batch 8] [--reps 2] [--base-dir DIR]

Needs ``pip install -e .[onnx,openvino]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import base_model, machine, machine_line, update_markdown, write_result


def towers(model: Any) -> tuple[Any, Any]:
    import torch
    import torch.nn.functional as F

    class Vision(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vm, self.proj = model.vision_model, model.vision_proj

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            h = self.vm(pixel_values=pixel_values).last_hidden_state
            return F.normalize(self.proj(h[:, 0, :]), dim=-1)

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc, self.proj = model.text_encoder, model.text_proj

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            h = self.enc(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return F.normalize(self.proj(h[:, 0, :]), dim=-1)

    return Vision().eval(), Text().eval()


def export(path: Path, out: Path, pixels: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> dict[str, Path]:
    import torch
    from transformers import BlipForImageTextRetrieval

    model = BlipForImageTextRetrieval.from_pretrained(str(path), attn_implementation="eager").eval()
    vision, text = towers(model)
    files = {"vision": out / "vision.onnx", "text": out / "text.onnx"}
    with torch.inference_mode():
        torch.onnx.export(
            vision,
            (torch.as_tensor(pixels[:2]),),
            str(files["vision"]),
            input_names=["pixel_values"],
            output_names=["embeds"],
            dynamic_axes={"pixel_values": {0: "batch"}, "embeds": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        torch.onnx.export(
            text,
            (torch.as_tensor(ids[:2]), torch.as_tensor(mask[:2])),
            str(files["text"]),
            input_names=["input_ids", "attention_mask"],
            output_names=["embeds"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
            opset_version=17,
            dynamo=False,
        )
    return files


def quantize(files: dict[str, Path], calib: dict[str, list[dict[str, np.ndarray]]], static: bool) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out: dict[str, Any] = {}
    for name, f in files.items():
        pre = f.with_suffix(".pre.onnx")
        quant_pre_process(str(f), str(pre), skip_symbolic_shape=True)
        dyn = f.with_suffix(".int8dyn.onnx")
        quantize_dynamic(str(pre), str(dyn), weight_type=QuantType.QInt8)
        out[f"{name}_dynamic"] = dyn
        if static:

            class Reader(CalibrationDataReader):
                def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
                    self.it = iter(feeds)

                def get_next(self) -> dict[str, np.ndarray] | None:
                    return next(self.it, None)

            st = f.with_suffix(".int8static.onnx")
            quantize_static(
                str(pre),
                str(st),
                Reader(calib[name]),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Gemm", "Conv"],
            )
            out[f"{name}_static"] = st
    return out


def ort_runner(path: Path, threads: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda feed: sess.run(None, feed)[0]


def ov_runner(path: Path, precision: str, threads: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    import openvino as ov

    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    compiled = core.compile_model(core.read_model(str(path)), "CPU", cfg)
    return lambda feed: np.asarray(compiled(feed)[0])


def timed(fn: Callable[[], Any], reps: int) -> tuple[float, list[float], Any]:
    out = fn()  # warm-up (also compiles / allocates)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def min_cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)).min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8, help="images per vision forward")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny model (plumbing check, numbers meaningless)")
    ap.add_argument("--no-static", action="store_true", help="skip static int8 quantization")
    ap.add_argument("--device", default="cpu", help="accepted for run_all.py; a CPU benchmark")
    ap.add_argument("--base-dir", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from blipsearch.synthetic import make_image
    from models import load_embedder
    from models.precision import has_native_bf16

    if args.quick:
        from make_test_models import make_all

        path = make_all(Path(tempfile.mkdtemp()), size="tiny")["blip-itm"]
    else:
        path = base_model(args.base_dir)
    threads = torch.get_num_threads()
    exact = load_embedder(str(path), device="cpu", batch_size=args.batch, precision="exact")
    fast = load_embedder(str(path), device="cpu", batch_size=args.batch, precision="fast")
    pixels = exact.preprocess([make_image(i, (640, 480)) for i in range(args.batch)])
    texts = [f"a photo of a red square and a blue circle, number {i}" for i in range(8)]
    tok = exact.processor.tokenizer(texts, padding=True, return_tensors="np")  # type: ignore[attr-defined]
    ids, mask = tok["input_ids"].astype(np.int64), tok["attention_mask"].astype(np.int64)
    feeds = {
        "vision": {"pixel_values": pixels},
        "text8": {"input_ids": ids, "attention_mask": mask},
        "text1": {"input_ids": ids[:1], "attention_mask": mask[:1]},
    }
    load_start = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    refs: dict[str, np.ndarray] = {}

    def record(runtime: str, tower: str, fn: Callable[[], np.ndarray]) -> None:
        try:
            med, times, out = timed(fn, args.reps)
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot run this graph is a result too
            rows.append({"runtime": runtime, "tower": tower, "error": f"{type(exc).__name__}: {exc}"[:300]})
            print(rows[-1], flush=True)
            return
        if runtime == "torch fp32":
            refs[tower] = out
        n = len(out)
        row = {
            "runtime": runtime,
            "tower": tower,
            "batch": n,
            "median_s": med,
            "times_s": times,
            "per_s": n / med,
            "min_cos_vs_fp32": min_cos(out, refs[tower]),
        }
        rows.append(row)
        print(row, flush=True)

    for emb, name in ((exact, "torch fp32"), (fast, "torch bf16" if has_native_bf16() else "torch fast (fp32)")):
        record(name, "vision", lambda e=emb: e.embed_pixels(pixels))
        record(name, "text b8", lambda e=emb: e.embed_texts(texts))
        record(name, "text b1", lambda e=emb: e.embed_texts(texts[:1]))

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        files = export(path, Path(tmp), pixels, ids, mask)
        export_s = time.perf_counter() - t0
        calib = {
            "vision": [{"pixel_values": exact.preprocess([make_image(100 + i, (640, 480)) for i in range(4)])}],
            "text": [{"input_ids": ids, "attention_mask": mask}],
        }
        t0 = time.perf_counter()
        quant = quantize(files, calib, static=not args.no_static)
        quant_s = time.perf_counter() - t0
        variants = {
            "ONNX Runtime fp32": (ort_runner, files["vision"], files["text"], ()),
            "ONNX Runtime int8 dynamic": (ort_runner, quant["vision_dynamic"], quant["text_dynamic"], ()),
        }
        if "vision_static" in quant:
            variants["ONNX Runtime int8 static (QDQ)"] = (ort_runner, quant["vision_static"], quant["text_static"], ())
        variants["OpenVINO fp32"] = (ov_runner, files["vision"], files["text"], ("f32",))
        variants["OpenVINO bf16"] = (ov_runner, files["vision"], files["text"], ("bf16",))
        if "vision_static" in quant:
            variants["OpenVINO int8 (QDQ)"] = (ov_runner, quant["vision_static"], quant["text_static"], ("f32",))
        for name, (make, vfile, tfile, extra) in variants.items():
            try:
                vis, txt = make(vfile, *extra, threads), make(tfile, *extra, threads)
            except Exception as exc:  # noqa: BLE001
                rows.append({"runtime": name, "tower": "all", "error": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            record(name, "vision", lambda v=vis: v(feeds["vision"]))
            record(name, "text b8", lambda t=txt: t(feeds["text8"]))
            record(name, "text b1", lambda t=txt: t(feeds["text1"]))

    m = machine()
    from models.precision import cpu_flags

    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "avx_vnni"})
    payload = {
        "model": "tiny" if args.quick else "BLIP base (random)",
        "batch": args.batch,
        "reps": args.reps,
        "threads": threads,
        "cpu_flags": flags,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg()[0],
        "export_s": export_s,
        "quantize_s": quant_s,
        "rows": rows,
    }
    write_result("runtimes", payload)
    if not args.quick:
        update_markdown("runtimes", markdown(payload, m))


def markdown(p: dict[str, Any], m: dict[str, Any]) -> str:
    base = {(r["tower"]): r for r in p["rows"] if r["runtime"] == "torch fp32" and "error" not in r}
    lines = [
        "### CPU runtimes: vision and text towers (scripts/bench/runtimes.py)",
        "",
        f"Machine: {machine_line(m)}; CPU flags: {', '.join(p['cpu_flags'])}. {p['model']}, vision batch "
        f"{p['batch']}, median of {p['reps']} after a warm-up, {p['threads']} threads. Load average (1 min) "
        f"at the start of the timings: {p.get('loadavg_start', float('nan')):.2f}, at the end: "
        f"{p.get('loadavg_end', float('nan')):.2f} (above the core count: other work shared "
        "the machine; read ratios within the run).",
        "",
        "| runtime | vision img/s | × fp32 | vision min cos | text b8 texts/s | text b1 ms | text min cos |",
        "|---|---|---|---|---|---|---|",
    ]
    by: dict[str, dict[str, Any]] = {}
    for r in p["rows"]:
        by.setdefault(r["runtime"], {})[r["tower"]] = r
    for name, towers_ in by.items():
        v, t8, t1 = towers_.get("vision", {}), towers_.get("text b8", {}), towers_.get("text b1", {})
        if "per_s" not in v:
            err = next((x.get("error") for x in towers_.values() if "error" in x), "failed")
            lines.append(f"| {name} | failed: {err[:80]} | | | | | |")
            continue
        ratio = v["per_s"] / base["vision"]["per_s"] if "vision" in base else float("nan")
        t8s = f"{t8['per_s']:.1f}" if "per_s" in t8 else "-"
        t1s = f"{1000 * t1['median_s']:.1f}" if "median_s" in t1 else "-"
        tc = f"{t8['min_cos_vs_fp32']:.5f}" if "min_cos_vs_fp32" in t8 else "-"
        lines.append(
            f"| {name} | {v['per_s']:.2f} | {ratio:.2f}× | {v['min_cos_vs_fp32']:.5f} | {t8s} | {t1s} | {tc} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
