#!/usr/bin/env python
"""What the query language costs: weighted queries against a single-part query, same run.

N structured 256-d vectors (scale.py's near-duplicate clusters) in a Flat and an IVF index
(``VectorIndex``, the product's class); each query kind ranks by the documented score through
``search/query/score.py:rank``, exactly what ``SearchEngine.execute`` runs for a weighted
query (record reads and model encodes left out: they are the same for every kind):

* baseline: a single-part query (one index search, the classic text → image plan);
* 1, 3 and 10 parts (a third of them negative), and relevance feedback with 5 + 5 record ids;
* ``--multi-n`` records of 32 vectors each (BLIP-2's shape) for the per-part max-sim rule;
* parsing cost per query of the one-box parser over a table of typical queries.

    python scripts/bench/query_language.py                 # 1M vectors (the issue's size)
    nice -n 5 python scripts/bench/query_language.py --n 200000 --multi-n 5000   # a shared machine
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, machine, machine_line, update_markdown, write_result
from scale import D, K, centres, draw

sys.path.insert(0, str(ROOT))  # the project's packages before scripts/bench/ (which has a rerank.py)

NOTE = (
    "BLIP-2-shaped (32-vector) Flat queries with many parts are slow: proving the exact top deepens "
    "the per-part shortlists (32 query rows for each record part) to most of the collection; exact "
    "indexes of at most 2^18 vectors are scored whole instead (`BRUTE_FORCE_VECTORS`). On large "
    "BLIP-2 collections use IVF/HNSW, where the shortlist is taken once and re-scored exactly."
)
QUERIES = [
    "red car -truck",
    '"a dog" +2 "on a beach"',
    "beach -people July 2023",
    "kids last summer in:Spain",
    'camera:"Canon EOS 5D" sunset since March',
    "a photo of a cat on a sofa",
    "2*mountain lake -0.5*fog 2019-2021",
    "wedding format:JPEG from May 2020 to June 2021",
]


def _index(spec: str, xb: np.ndarray, vpi: int, nprobe: int) -> Any:
    from search.vector_index import VectorIndex

    ix = VectorIndex.empty(spec, D, vpi)
    n = len(xb) // vpi
    ix.train(xb[: min(len(xb), 100_000)])
    for s in range(0, n, 50_000):
        e = min(n, s + 50_000)
        ix.add(np.arange(s, e, dtype=np.int64), xb[s * vpi : e * vpi])
    if ix.kind == "ivf":
        ix.defaults["nprobe"] = nprobe
    return ix


def _parts(kind: str, rng: np.random.Generator, xq: np.ndarray, n_records: int) -> list[Any]:
    from search.query.parts import Part

    if kind.startswith("feedback"):
        ids = rng.choice(n_records, 10, replace=False)
        return [Part("record", int(i), 1.0 if j < 5 else -1.0) for j, i in enumerate(ids)]
    count = int(kind.split("-")[0])
    rows = rng.choice(len(xq), count, replace=False)
    return [Part("vector", xq[r], 1.0 if j < count - count // 3 else -0.5) for j, r in enumerate(rows)]


def _run(ix: Any, kinds: list[str], xq: np.ndarray, queries: int, k: int, n_records: int) -> dict[str, Any]:
    from search.query import score

    single = ix.vectors_per_item == 1
    exact = ix.kind == "flat"

    def vectors(p: Any) -> np.ndarray:
        return ix.vectors_of(int(p.value)) if p.kind == "record" else np.asarray(p.value)

    def shortlist(q: np.ndarray, n: int) -> Any:
        ids, s = ix.search(q, n)
        from rerank.base import Candidate

        return [Candidate(int(i), float(v)) for i, v in zip(ids, s, strict=True)], ()

    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for kind in kinds:
        times, rounds, exact_runs = [], [], 0
        for qi in range(queries):
            if kind == "baseline":
                q = xq[qi % len(xq)]
                t0 = time.perf_counter()
                ix.search(q, k)
                times.append(time.perf_counter() - t0)
                continue
            parts = _parts(kind, rng, xq, n_records)
            t0 = time.perf_counter()
            enc = score.encode(parts, D, single, vectors)
            ranked = score.rank(enc, ix, shortlist, k, exact)
            times.append(time.perf_counter() - t0)
            rounds.append(ranked.rounds)
            exact_runs += ranked.exact
        row = {
            "median_ms": round(statistics.median(times) * 1e3, 3),
            "p90_ms": round(float(np.percentile(times, 90)) * 1e3, 3),
        }
        if rounds:
            row.update(mean_rounds=round(float(np.mean(rounds)), 2), proven_exact=f"{exact_runs}/{queries}")
        out[kind] = row
    base = out["baseline"]["median_ms"]
    for row in out.values():
        row["x_baseline"] = round(row["median_ms"] / base, 2) if base else None
    return out


def _parse_cost(repeat: int) -> dict[str, float]:
    from datetime import date

    from search.query.parser import parse

    today = date(2026, 12, 2)
    t0 = time.perf_counter()
    for _ in range(repeat):
        for q in QUERIES:
            parse(q, today)
    per = (time.perf_counter() - t0) / (repeat * len(QUERIES))
    return {"us_per_query": round(per * 1e6, 2), "queries": len(QUERIES), "repeat": repeat}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="single-vector records (the issue's 1M)")
    ap.add_argument("--multi-n", type=int, default=20_000, help="records of 32 vectors (BLIP-2's shape); 0: skip")
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--ivf-spec", default="IVF1024,Flat")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads")
    args = ap.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    kinds = ["baseline", "1-part", "3-part", "10-part", "feedback-5+5"]
    c = centres(args.n)
    xb, xq = draw(c, args.n, seed=1000), draw(c, 64, seed=7)
    results: dict[str, Any] = {}
    for spec in ("Flat", args.ivf_spec):
        ix = _index(spec, xb, 1, args.nprobe)
        results[f"single-vector {spec}"] = _run(ix, kinds, xq, args.queries, K, args.n)
        del ix
    if args.multi_n:
        cm = centres(args.multi_n * 32)
        xm = draw(cm, args.multi_n * 32, seed=11)
        ivf = f"IVF{max(16, int(np.sqrt(args.multi_n * 32)) // 4)},Flat"
        for spec in ("Flat", ivf):
            ix = _index(spec, xm, 32, args.nprobe)
            results[f"32-vector {spec}"] = _run(ix, kinds, xq, max(5, args.queries // 3), K, args.multi_n)
            del ix
    parse_cost = _parse_cost(200)
    load1 = os.getloadavg()[0]
    m = machine()
    settings = vars(args) | {"k": K, "dim": D, "loadavg_start": load0, "loadavg_end": load1}
    write_result("query_language", {"settings": settings, "results": results, "parse": parse_cost})
    lines = [
        "## Query language: weighted, composed and feedback queries",
        "",
        "`scripts/bench/query_language.py` "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
        + f". Machine: {machine_line(m)}. **Shared machine** (load average {load0:.1f} at the start, "
        f"{load1:.1f} at the end; other jobs ran): compare rows within this run, not with other sections."
        + (" N is below the issue's 1M to fit the shared machine; the default is 1M." if args.n < 1_000_000 else ""),
        "",
        "Median (p90) ms per query, k=10, ranking only (encodes and record reads are the same for every kind); "
        "x: against the single-part baseline of the same index in the same run.",
        "",
        "| index | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for name, rows in results.items():
        cells = [f"{rows[kd]['median_ms']:.2f} ({rows[kd]['p90_ms']:.2f}) x{rows[kd]['x_baseline']}" for kd in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    multi = [(n, r) for n, r in results.items() if n.startswith("32-vector") and "Flat" in n and "IVF" not in n]
    for name, rows in multi:
        lines.append("")
        lines.append(
            f"{name}: shortlist rounds until the top was proven exact (mean): "
            + ", ".join(f"{kd} {rows[kd].get('mean_rounds')} ({rows[kd].get('proven_exact')})" for kd in kinds[1:])
            + "."
        )
    lines += [
        "",
        NOTE,
        "",
        f"Parsing: {parse_cost['us_per_query']} µs per query ({parse_cost['queries']} typical queries).",
    ]
    update_markdown("query_language", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
