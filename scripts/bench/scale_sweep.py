#!/usr/bin/env python
"""Scale recipe sweep: which IVF-PQ recipe reaches recall@10 >= 0.9 with the least work a query.

The data is scale.py's (unit vectors around N/250 centres: near-duplicate clusters of ~250),
at 1M-2M vectors, held in RAM (the recipe, not the on-disk placement, is what is compared).
For each recipe (nlist, training sample, PQ bytes) it reports, per nprobe and exact re-rank
("refine") depth R, recall@10 against exact search and the work of a query: PQ codes scanned
(nprobe x the probed lists' length) and bytes of exact vectors read for the re-rank (R x 1 KB).
Baseline in the same run: the recipe of the first 10M run (IVF1024,PQ64 on 51,200, R = 100).

What transfers to 10M is the ratio of data clusters to IVF lists (how many lists one cluster's
members spread over) and the list length; ``--n`` scales both.

    python scripts/bench/scale_sweep.py                       # 1M, the default recipes
    python scripts/bench/scale_sweep.py --n 2000000 --recipes IVF2048,PQ64:102400
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, write_result
from scale import D, K, centres, draw

NPROBES = (1, 2, 4, 8, 16, 32, 64)
DEPTHS = (10, 100, 200, 300, 500)
DEFAULT = (
    "IVF1024,PQ64:51200",
    "IVF1024,PQ64:100000",
    "IVF512,PQ64:25000",
    "IVF512,PQ64:50000",
    "IVF512,PQ64:100000",
    "IVF256,PQ64:100000",
)


def truth(xb: np.ndarray, xq: np.ndarray) -> np.ndarray:
    sims = xq @ xb.T
    top = np.argpartition(-sims, K, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def sweep(spec: str, train: int, xb: np.ndarray, xq: np.ndarray, gt: np.ndarray, threads: int) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.index_factory(D, spec, faiss.METRIC_INNER_PRODUCT)
    pick = np.sort(np.random.default_rng(1).choice(len(xb), min(len(xb), train), replace=False))
    t0 = time.perf_counter()
    index.train(xb[pick])
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.add(xb)
    add_s = time.perf_counter() - t0
    ivf = faiss.extract_index_ivf(index)
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)])
    rows = []
    for nprobe in NPROBES:
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        _, ids = index.search(xq, max(DEPTHS), params=params)
        scanned = float(np.mean([sizes[ivf.quantizer.search(q[None], nprobe)[1][0]].sum() for q in xq[:50]]))
        for depth in DEPTHS:
            hits = []
            for q, row, t in zip(xq, ids, gt, strict=True):
                cand = row[:depth]
                cand = cand[cand >= 0]
                top = cand[np.argsort(-(xb[cand] @ q))[:K]] if depth > K else cand[:K]
                hits.append(len(set(top.tolist()) & set(t.tolist())) / K)
            rows.append(
                {
                    "nprobe": nprobe,
                    "refine": depth if depth > K else 0,
                    "recall_at_10": float(np.mean(hits)),
                    "codes_scanned": scanned,
                    "refine_bytes": (depth if depth > K else 0) * D * 4,
                }
            )
        best = max(r["recall_at_10"] for r in rows if r["nprobe"] == nprobe)
        print(f"  {spec} train {train} nprobe {nprobe}: best recall {best:.3f}", file=sys.stderr, flush=True)
        if min(r["recall_at_10"] for r in rows if r["nprobe"] == nprobe and r["refine"] >= 300) > 0.995:
            break
    cv = float(sizes.std() / sizes.mean())
    return {"spec": spec, "train": train, "train_s": train_s, "add_s": add_s, "list_cv": cv, "rows": rows}


def cheapest(result: dict[str, Any], goal: float) -> dict[str, Any] | None:
    """The row reaching ``goal`` with the least work (1 KB of exact vector ~ 16 PQ64 codes scanned)."""
    ok = [r for r in result["rows"] if r["recall_at_10"] >= goal]
    return min(ok, key=lambda r: r["codes_scanned"] * 64 + r["refine_bytes"] * 4) if ok else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipes", nargs="*", default=list(DEFAULT), help="SPEC:TRAIN ...")
    ap.add_argument("--goal", type=float, default=0.9)
    args = ap.parse_args()
    c = centres(args.n)
    starts = range(0, args.n, 100_000)
    xb = np.concatenate([draw(c, min(100_000, args.n - s), seed=1000 + i) for i, s in enumerate(starts)])
    xq = draw(c, args.queries, seed=7)  # the same queries and vectors as scale.py at this n
    gt = truth(xb, xq)
    out = []
    prior = RESULTS / f"scale_sweep_{args.n}.json"  # recipes of earlier runs at this n are kept
    if prior.exists():
        done = json.loads(prior.read_text()).get("recipes", [])
        out = [r for r in done if f"{r['spec']}:{r['train']}" not in set(args.recipes)]
    for recipe in args.recipes:
        spec, train = recipe.split(":")
        res = sweep(spec, int(train), xb, xq, gt, args.threads)
        res["cheapest"] = cheapest(res, args.goal)
        took = f"train {res['train_s']:.0f}s add {res['add_s']:.0f}s"
        print(f"{spec} train {train}: {took} cheapest {res['cheapest']}", file=sys.stderr, flush=True)
        out.append(res)
    write_result(
        f"scale_sweep_{args.n}",
        {
            "machine": machine(),
            "settings": {
                "n": args.n,
                "clusters": len(c),
                "queries": args.queries,
                "threads": args.threads,
                "goal": args.goal,
                "note": "machine shared with other jobs (noisy timings)",
            },
            "recipes": out,
        },
    )


if __name__ == "__main__":
    main()
