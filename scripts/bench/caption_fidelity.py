#!/usr/bin/env python
"""The caption fidelity bound alone (evaluation/fidelity.py), base-size random BLIP and the tiny
captioners: bf16 autocast on every caption stage against fp32 ``exact``.

Per model: teacher-forced mean / max |Δ log p| per token of the exact model's greedy caption,
the measured bf16 error, the share of decisive positions and the top-1 agreement there (the
bound: mean ≤ 0.05 nats, agreement ≥ 99 %), plus free greedy token agreement and identical
captions (reported only). Where the CPU has no bf16 units, autocast emulates bf16 (same
rounding, slower): the fidelity numbers hold, the timings do not, so none are reported.

    python scripts/bench/caption_fidelity.py [--models base tiny] [--n 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import base_model, machine, machine_line, update_markdown, write_result
from fidelity import caption_metrics, jpegs

from evaluation.fidelity import DECISIVE_AGREEMENT_BOUND, MEAN_ABS_DLOGP_BOUND


def markdown(rows: list[dict[str, Any]], m: dict[str, Any], flags: list[str]) -> str:
    lines = [
        "### Caption fidelity: bf16 vs fp32, teacher-forced (scripts/bench/caption_fidelity.py)",
        "",
        f"Machine: {machine_line(m)}. CPU flags: {', '.join(flags) or 'none of interest'}. "
        f"Bound: mean |Δ log p| ≤ {MEAN_ABS_DLOGP_BOUND} nats per token and top-1 agreement ≥ "
        f"{100 * DECISIVE_AGREEMENT_BOUND:.0f} % at decisive positions (the exact model's top-1 margin "
        "above the measured bf16 error); why: evaluation/fidelity.py. Greedy strings are reported, not judged: "
        "on random weights the top two tokens are often closer than bf16 rounding, and one flip changes "
        "everything after it.",
        "",
        "| model | images | positions | mean / max abs dlogp (nats) | bf16 error (nats) | decisive share "
        "| decisive top-1 agree | greedy token agree | identical captions | bound |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tf = r["teacher_forced"]
        lines.append(
            f"| {r['model']} | {r['captions']} | {tf['positions']} | {tf['mean_abs_dlogp']:.4f} / "
            f"{tf['max_abs_dlogp']:.4f} | {tf['error']:.4f} | {100 * tf['decisive_share']:.0f} % | "
            f"{100 * tf['decisive_agreement']:.1f} % | {100 * r['greedy_token_agreement']:.0f} % | "
            f"{100 * r['identical']:.0f} % | {'holds' if tf['holds'] else 'MISSES'} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["base", "tiny"], choices=["base", "tiny"])
    ap.add_argument("--n", type=int, default=8, help="images per model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--base-dir", type=Path, default=None, help="where the base-size models are (made if missing)")
    args = ap.parse_args()

    from make_test_models import make_all

    from models.precision import NATIVE_BF16_FLAGS, cpu_flags

    flags = sorted(cpu_flags() & (NATIVE_BF16_FLAGS | {"avx2", "avx512f"}))
    data = jpegs(args.n, large=False)
    rows = []
    if "base" in args.models:
        path = base_model(args.base_dir, which="blip-caption")
        rows.append({"model": "BLIP base (random)", **caption_metrics(path, data, args.device)})
        print(rows[-1], flush=True)
    if "tiny" in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            tiny = make_all(Path(tmp), size="tiny", seed=0)
            for name, key in (("BLIP tiny", "blip-caption"), ("BLIP-2 tiny", "blip2-caption")):
                rows.append({"model": name, **caption_metrics(tiny[key], data, args.device)})
                print(rows[-1], flush=True)
    m = machine()
    write_result("caption_fidelity", {"cpu_flags": flags, "rows": rows})
    update_markdown("caption_fidelity", markdown(rows, m, flags))


if __name__ == "__main__":
    main()
