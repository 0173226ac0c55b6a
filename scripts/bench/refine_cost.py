#!/usr/bin/env python
"""What the product's exact re-rank (``refine_k``) costs a query, and what it buys.

A collection of N structured 256-d vectors (scale.py's near-duplicate clusters) in Parquet
shards of ``--shard-size`` records, an in-memory IVF-PQ index over it; the same queries through
``VectorIndex.search`` with refine off (baseline, same run) and at each depth: recall@10 against
exact search and latency. The re-rank reads the shortlist's vectors by id
(``Collection.embeddings_of``) from the shards' memory-mapped vector cache
(storage/vector_cache.py): the first query that touches a shard writes its cache from the
Parquet shard ("cold", measured once at the first depth), later ones read one row per candidate.

    python scripts/bench/refine_cost.py                 # 50,000 vectors in shards of 4,096
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result
from scale import D, K, centres, draw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--spec", default="IVF64,PQ64")
    ap.add_argument("--nprobe", type=int, default=8)
    ap.add_argument("--depths", type=int, nargs="*", default=[0, 50, 100, 200])
    args = ap.parse_args()

    import faiss

    from search import index_store
    from search.index_store import IndexPolicy
    from storage.collection import Collection

    faiss.omp_set_num_threads(1)
    c = centres(args.n)
    xb = draw(c, args.n, seed=1000)
    xq = draw(c, args.queries, seed=7)
    model = {"model_id": "synthetic", "fingerprint": "f" * 16, "family": "blip", "dim": D, "vectors_per_image": 1}
    with tempfile.TemporaryDirectory() as tmp:
        coll = Collection.create(Path(tmp), "r", model=model)
        for s in range(0, args.n, args.shard_size):
            e = min(args.n, s + args.shard_size)
            rows = {
                "uri": [f"mem://{i}" for i in range(s, e)],
                "sha256": [f"{i:064x}" for i in range(s, e)],
                "width": [1] * (e - s),
                "height": [1] * (e - s),
                "bytes": [1] * (e - s),
            }
            coll.append_aligned(rows, xb[s:e])
        index = index_store.build(coll, args.spec, IndexPolicy(refine_k=0))
        truth = [set(np.argsort(-(xb @ q))[:K].tolist()) for q in xq]  # record ids are 0..n-1 in order
        rows = []
        params = index.make_params(nprobe=args.nprobe)
        cold = max(args.depths)
        for depth, cache in [(cold, "cold"), *((d, "warm") for d in args.depths)]:
            t0 = time.perf_counter()
            got = [index.search(q, K, params=params, refine_k=depth)[0] for q in xq]
            ms = (time.perf_counter() - t0) * 1e3 / len(xq)
            recall = float(np.mean([len(set(g.tolist()) & t) / K for g, t in zip(got, truth, strict=True)]))
            rows.append({"refine_k": depth, "cache": cache, "recall_at_10": recall, "ms_per_query": ms})
            print(f"refine_k {depth:<4} ({cache}) recall@10 {recall:.3f} {ms:8.1f} ms/query", file=sys.stderr)
    write_result(
        "refine_cost",
        {
            "settings": {**vars(args), "shards": -(-args.n // args.shard_size), "threads": 1},
            "note": "machine shared with other jobs (noisy timings)",
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
