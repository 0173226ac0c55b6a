#!/usr/bin/env python
"""Index types on structured synthetic vectors: build time, memory, QPS against recall@10.

Data: 256-d unit vectors drawn around a few thousand cluster centres (clustered like real
image embeddings, not uniform noise); queries are held-out draws from the same clusters.
Exact ``Flat`` search is the baseline; recall@10 is measured against it. Search parameters
(``nprobe``, ``efSearch``) are passed per call as FAISS SearchParameters.

    python scripts/bench/index_types.py [--quick] [--n 1000000] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, machine_line, update_markdown, write_result


def structured(n: int, d: int, centres: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centres, n)] + rng.normal(scale=0.06, size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k vectors")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists (default 1024 quick, 4096 full)")
    ap.add_argument("--skip", nargs="*", default=[], help="index families to skip, e.g. HNSW (slow to build on CPU)")
    args = ap.parse_args()
    if args.quick:
        args.n, args.queries = 100_000, 1000
    import faiss

    from search import faiss_backend as fb
    from search.vector_index import VectorIndex

    d, k = 256, 10
    data = structured(args.n + args.queries, d, centres=max(100, args.n // 250), seed=0)
    xb, xq = data[: args.n], data[args.n :]
    ids = np.arange(args.n, dtype=np.int64)
    nlist = args.nlist or (1024 if args.quick else 4096)
    specs = {
        "Flat": [None],
        f"IVF{nlist},Flat": [("nprobe", p) for p in (1, 4, 8, 16, 32, 64)],
        f"IVF{nlist},SQ8": [("nprobe", p) for p in (4, 8, 16)],
        f"IVF{nlist},PQ32": [("nprobe", p) for p in (8, 16, 32, 64)],
        "HNSW32,Flat": [("efSearch", e) for e in (16, 32, 64, 128)],
    }
    specs = {s: p for s, p in specs.items() if not any(s.startswith(x) for x in args.skip)}
    rows, exact = [], None
    for spec, params_list in specs.items():
        t0 = time.perf_counter()
        index = VectorIndex.empty(spec, d, 1)
        if not index.cpu.is_trained:
            index.train(xb[np.random.default_rng(1).choice(args.n, min(args.n, 50 * nlist), replace=False)])
        index.add(ids, xb)
        build_s = time.perf_counter() - t0
        mem = faiss.serialize_index(index.cpu).nbytes
        for p in params_list:
            sp = None
            if p and p[0] == "nprobe":
                sp = faiss.SearchParametersIVF(nprobe=p[1])
            elif p and p[0] == "efSearch":
                sp = faiss.SearchParametersHNSW(efSearch=p[1])
            target = index.gpu if (index.gpu is not None and args.device == "cuda") else index.cpu
            index.search(xq[0], k, sp)  # warm
            t1 = time.perf_counter()
            _, labels = target.search(xq, k, params=sp) if sp is not None else target.search(xq, k)
            qps = len(xq) / (time.perf_counter() - t1)
            if exact is None:
                exact = labels
            recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(labels, exact, strict=True)]))
            rows.append(
                {
                    "index": spec,
                    "param": f"{p[0]}={p[1]}" if p else "-",
                    "recall_at_10": recall,
                    "qps": qps,
                    "build_s": build_s,
                    "memory_mb": mem / 2**20,
                    "device": args.device,
                }
            )
            print(
                f"{spec:<18} {rows[-1]['param']:<12} recall@10 {recall:.3f}  {qps:9.0f} qps  build {build_s:.1f}s"
                f"  {mem / 2**20:.0f} MB",
                flush=True,
            )
    best = {}
    for r in rows:
        if r["recall_at_10"] >= 0.95 and r["qps"] > best.get(r["index"], {}).get("qps", 0):
            best[r["index"]] = r
    result = {
        "settings": {
            "n": args.n,
            "queries": args.queries,
            "dim": d,
            "k": k,
            "device": args.device,
            "gpu_faiss": fb.num_gpus() > 0,
            "nlist": nlist,
            "train_sample": min(args.n, 50 * nlist),
            "skipped": args.skip,
        },
        "rows": rows,
        "best_at_recall_0.95": {s: {"param": r["param"], "qps": r["qps"]} for s, r in best.items()},
    }
    write_result("index_types", result)
    lines = [
        "## Index types: QPS vs recall@10 (`scripts/bench/index_types.py`)",
        "",
        f"Machine: {machine_line(machine())}. {args.n:,} structured 256-d vectors, {args.queries} held-out queries "
        f"(batched), k = 10, device {args.device}; recall against exact Flat in the same run; IVF trained on "
        f"{min(args.n, 50 * nlist):,} vectors. Reproduce: `python scripts/bench/index_types.py "
        f"{' '.join(sys.argv[1:])}`." + (f" Not run: {', '.join(args.skip)}." if args.skip else ""),
        "",
        "| index | param | recall@10 | QPS | build s | memory MB |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['index']} | {r['param']} | {r['recall_at_10']:.3f} | {r['qps']:.0f} | {r['build_s']:.1f} | "
        f"{r['memory_mb']:.0f} |"
        for r in rows
    ]
    lines += [
        "",
        "Fastest setting at recall@10 ≥ 0.95: "
        + ", ".join(f"{s} ({r['param']}): {r['qps']:.0f} QPS" for s, r in best.items()),
    ]
    update_markdown("index_types", "\n".join(lines))


if __name__ == "__main__":
    main()
