"""Shared benchmark plumbing: machine description, timing, JSON results, BENCHMARKS.md sections."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
RESULTS = ROOT / "bench-results"
BENCH_MD = ROOT / "BENCHMARKS.md"


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
        import faiss

        info["faiss"] = faiss.__version__
    except ImportError:
        pass
    return info


def timeit(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> dict[str, float]:
    """Median and min wall seconds over ``repeat`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": repeat}


def gemm(dtype: Any, n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of an n³ ``torch.mm`` in ``dtype`` on the CPU: the practical matrix ceiling."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def base_model(cache: Path | None = None, which: str = "blip-itm") -> Path:
    """A randomly initialised base-size BLIP checkpoint (the FLOPs of the hub base models):
    ``blip-itm`` (retrieval, as blip-itm-base-coco) or ``blip-caption`` (blip-image-captioning-base)."""
    from make_test_models import make_all

    out = cache or RESULTS / "models" / "base"
    if not (out / which / "config.json").is_file():
        make_all(out, size="base", seed=0)
    return out / which


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "benchmark": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def update_markdown(name: str, body: str) -> None:
    """Replace (or append) the ``<!-- bench:NAME -->`` section of BENCHMARKS.md."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = BENCH_MD.read_text() if BENCH_MD.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCH_MD.write_text(text)


def machine_line(m: dict[str, Any]) -> str:
    gpu = m.get("gpu") or "no GPU"
    return (
        f"{m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads), {gpu}; "
        f"torch {m['torch']}, transformers {m.get('transformers')}, faiss {m.get('faiss')}"
    )
