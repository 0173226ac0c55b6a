#!/usr/bin/env python
"""Run every benchmark under scripts/bench/, merge results, render BENCHMARKS.md and plots.

    python scripts/bench/run_all.py [--quick] [--gpu] [--only NAME ...]

Each benchmark writes ``bench-results/NAME.json`` and its own BENCHMARKS.md section; this
script runs them in turn, merges every JSON into ``bench-results/latest.json``, rewrites the
BENCHMARKS.md header (machine, date, how to reproduce) and draws ``bench-results/*.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_MD, RESULTS, machine, machine_line

HERE = Path(__file__).resolve().parent
SKIP = {"common.py", "run_all.py", "__init__.py"}
HEADER_END = "<!-- /header -->"


def benchmarks() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if p.name not in SKIP)


def render_header(m: dict[str, Any], ran: list[dict[str, Any]], quick: bool) -> None:
    text = BENCH_MD.read_text() if BENCH_MD.exists() else ""
    body = text.split(HEADER_END, 1)[1] if HEADER_END in text else text.split("\n", 1)[-1]
    rows = "\n".join(f"| `{r['name']}` | {r['status']} | {r['seconds']:.0f} |" for r in ran)
    plots = "\n".join(f"![{p.stem}](bench-results/{p.name})" for p in sorted(RESULTS.glob("*.png")))
    header = f"""# Benchmarks

Every number here was measured by a script under `scripts/bench/`, which compares against a
baseline in the same run and writes JSON to `bench-results/` (merged in
`bench-results/latest.json`). Models are randomly initialised at the real architecture's size
(`scripts/make_test_models.py --size base`): the FLOPs of the hub checkpoints, meaningless scores.

Last `run_all.py` run: {datetime.now(timezone.utc).date()} on {machine_line(m)}{" (--quick)" if quick else ""}.
Reproduce everything: `python scripts/bench/run_all.py [--quick] [--gpu]`; one benchmark:
`python scripts/bench/NAME.py`.

| benchmark | status | seconds |
|---|---|---|
{rows}

{plots}
{HEADER_END}"""
    BENCH_MD.write_text(header + body)


def _line_plot(plt: Any, series: dict[str, list[tuple[float, float]]], name: str, **axes: Any) -> Path | None:
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in series.items():
        xs, ys = zip(*sorted(pts), strict=True)
        ax.plot(xs, ys, marker="o", label=label)
    ax.set(**axes)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = RESULTS / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(results: dict[str, Any]) -> list[Path]:
    """Throughput against batch size, and QPS against recall, from every result's rows."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots (pip install -e .[dev])")
        return []
    throughput: dict[str, list[tuple[float, float]]] = {}
    recall: dict[str, list[tuple[float, float]]] = {}
    for name, res in results.items():
        for row in res.get("rows", []):
            if "batch_size" in row and "items_per_s" in row:
                throughput.setdefault(f"{name}: {row.get('method', '')}", []).append(
                    (row["batch_size"], row["items_per_s"])
                )
            if "recall_at_10" in row and "qps" in row:
                label = f"{row.get('index', name)} ({row.get('device', 'cpu')})"
                recall.setdefault(label, []).append((row["recall_at_10"], row["qps"]))
    out = [
        _line_plot(
            plt,
            throughput,
            "throughput_vs_batch",
            xscale="log",
            xlabel="batch size",
            ylabel="items / s",
            title="Throughput vs batch size",
        ),
        _line_plot(
            plt, recall, "qps_vs_recall", yscale="log", xlabel="recall@10", ylabel="queries / s", title="QPS vs recall"
        ),
    ]
    return [p for p in out if p is not None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small settings: the whole run within 10 minutes on 2 cores")
    ap.add_argument("--gpu", action="store_true", help="also run the GPU variants (needs CUDA)")
    ap.add_argument("--only", nargs="*", default=None, help="benchmark names to run (default: all)")
    args = ap.parse_args()
    ran = []
    for script in benchmarks():
        if args.only and script.stem not in args.only:
            continue
        cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
        if args.gpu:
            cmd += ["--device", "cuda"]
        print(f"== {script.stem}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=HERE.parents[1])
        ran.append(
            {
                "name": script.stem,
                "status": "ok" if proc.returncode == 0 else f"failed ({proc.returncode})",
                "seconds": time.perf_counter() - t0,
            }
        )
    merged = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json")) if p.stem != "latest"}
    (RESULTS / "latest.json").write_text(json.dumps(merged, indent=2))
    plot(merged)
    if ran:  # with nothing run (e.g. --only of no benchmark) only merge and re-plot
        render_header(machine(), ran, args.quick)
    print(f"merged {len(merged)} results into {RESULTS / 'latest.json'}")
    if any(r["status"] != "ok" for r in ran):
        sys.exit(1)


if __name__ == "__main__":
    main()
