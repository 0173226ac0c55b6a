"""Sharded serving on Ray Serve vs one node: same results, QPS, latency and memory.

Builds a collection of structured synthetic 256-d vectors (near-duplicate clusters, as
scripts/bench/scale.py), then answers the same queries

* on one node: the collection's exact Flat index in this process (the baseline), and
* through N Ray Serve shard deployments (api/ray_serve.py ``ShardDeployment``, memory-mapped
  per-Parquet-shard Flat indexes) with the router's fan-out and exact top-k merge
  (search/sharded.py), on a local Ray.

It checks that every query's ids equal the single node's (scores within 1e-5) and reports QPS
at 1 and 8 concurrent clients, p50/p95 latency, and each shard replica's RSS split into
file-backed (the mapped vectors) and anonymous memory. The model and HTTP are left out: they
run in the router exactly as on one node. Reproduce: ``python scripts/bench/sharded.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, update_markdown, write_result

D = 256
MODEL = {"model_id": "synthetic", "fingerprint": "f" * 16, "family": "blip", "dim": D, "vectors_per_image": 1}


def vectors(n: int, seed: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, len(centres), n)] + rng.normal(scale=0.06, size=(n, D)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build(data_dir: Path, n: int, shard_rows: int) -> Any:
    from storage.collection import Collection

    centres = np.random.default_rng(0).normal(size=(max(100, n // 250), D)).astype(np.float32)
    coll = Collection.create(data_dir, "bench", model=MODEL)
    for i, start in enumerate(range(0, n, shard_rows)):
        stop = min(n, start + shard_rows)
        rows = {
            "uri": [f"mem://{j}" for j in range(start, stop)],
            "sha256": [f"{j:064x}" for j in range(start, stop)],
            "width": [1] * (stop - start),
            "height": [1] * (stop - start),
            "bytes": [1] * (stop - start),
        }
        coll.append_aligned(rows, vectors(stop - start, 100 + i, centres))
    return coll, vectors


def measure(search: Any, queries: np.ndarray, k: int, clients: int) -> dict[str, float]:
    lat: list[float] = []

    def one(q: np.ndarray) -> None:
        t0 = time.perf_counter()
        search(q, k)
        lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, queries))
    wall = time.perf_counter() - t0
    lat.sort()
    return {
        "clients": clients,
        "qps": len(queries) / wall,
        "p50_ms": 1e3 * statistics.median(lat),
        "p95_ms": 1e3 * lat[int(0.95 * (len(lat) - 1))],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--shard-rows", type=int, default=16384, help="records per Parquet shard")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()

    import faiss
    import ray
    from ray import serve

    from api.ray_serve import ShardDeployment, sharded_loader
    from blipsearch.config import Settings
    from search import index_store

    faiss.omp_set_num_threads(1)  # one query per thread on both sides: a fair comparison on 2 cores
    work = Path(args.work or tempfile.mkdtemp(prefix="blipsearch-sharded-"))
    t0 = time.perf_counter()
    coll, _ = build(work / "data", args.n, args.shard_rows)
    build_s = time.perf_counter() - t0
    centres = np.random.default_rng(0).normal(size=(max(100, args.n // 250), D)).astype(np.float32)
    queries = vectors(args.queries, 7, centres)

    single = index_store.build(coll, "Flat")
    base = {c: measure(lambda q, k: single.search(q, k), queries, args.k, c) for c in (1, 8)}
    want = [single.search(q, args.k) for q in queries]

    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    try:
        shard_cls = serve.deployment(ShardDeployment)
        handles = []
        for i in range(args.shards):
            app = shard_cls.options(name=f"shard-{i}", ray_actor_options={"num_cpus": 0.5}).bind(
                str(work / "data"), i, args.shards
            )
            handles.append(serve.run(app, name=f"shard-{i}", route_prefix=None))
        settings = Settings(data_dir=work / "data", shard_timeout_s=120)
        sharded = sharded_loader(settings, handles)(coll)
        t0 = time.perf_counter()
        sharded.search(queries[0], args.k)  # first query: each shard writes and maps its files
        first_s = time.perf_counter() - t0
        equal = ties = 0
        max_diff = 0.0
        for q, (ids, scores) in zip(queries, want, strict=True):
            got_ids, got_scores = sharded.search(q, args.k)
            equal += int(np.array_equal(got_ids, ids))
            max_diff = max(max_diff, float(np.abs(got_scores - scores).max()))
            # Otherwise: the same scores, and ids differ only at positions whose score is tied
            # (near-duplicates with bit-equal scores; FAISS and the merge break ties differently).
            differ = got_ids != ids
            tied = np.array([np.sum(scores == x) > 1 or x == scores[-1] for x in scores])  # k-th: tied past k
            ties += int(differ.any() and np.array_equal(got_scores, scores) and bool(tied[differ].all()))
        shard = {c: measure(lambda q, k: sharded.search(q, k), queries, args.k, c) for c in (1, 8)}
        mem = []
        for i, h in enumerate(handles):
            st = h.stats.remote().result(timeout_s=60)
            mem.append({"shard": i, **{k[:-3]: v for k, v in st.items() if k.endswith("_mb")}})
    finally:
        serve.shutdown()
        ray.shutdown()

    m = machine()
    flags = sorted(set(Path("/proc/cpuinfo").read_text().split()) & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    load = os.getloadavg()
    result = {
        "settings": {**vars(args), "faiss_threads": 1},
        "cpu_flags": flags,
        "loadavg_end": load[0],
        "build_s": build_s,
        "first_query_s": first_s,
        "equal_ids": equal,
        "differ_only_in_tied_order": ties,
        "queries": len(queries),
        "max_score_diff": max_diff,
        "single": base,
        "sharded": shard,
        "shard_memory_mb": mem,
        "vectors_mb": args.n * D * 4 / 2**20,
    }
    write_result("sharded", result)
    rows = "\n".join(
        f"| {c} | {base[c]['qps']:.1f} | {base[c]['p50_ms']:.1f} / {base[c]['p95_ms']:.1f} | "
        f"{shard[c]['qps']:.1f} | {shard[c]['p50_ms']:.1f} / {shard[c]['p95_ms']:.1f} |"
        for c in (1, 8)
    )
    mem_rows = "\n".join(
        f"| {x['shard']} | {x.get('VmRSS', 0):.0f} | {x.get('RssFile', 0):.0f} | {x.get('RssAnon', 0):.0f} |"
        for x in mem
    )
    update_markdown(
        "sharded",
        f"""## Sharded serving on Ray Serve vs one node (`scripts/bench/sharded.py`)

Machine: {machine_line(m)}; CPU flags {", ".join(flags)}; load average {load[0]:.2f} at the end
(2 cores shared by the driver, {args.shards} shard replicas and Ray's own processes).
{args.n:,} structured 256-d vectors ({result["vectors_mb"]:.0f} MB) in Parquet shards of {args.shard_rows:,};
{len(queries)} queries, k = {args.k}, FAISS threads 1. One node: the collection's Flat index in the
driver. Sharded: {args.shards} Ray Serve shard deployments (1 replica each), the router's fan-out and
exact top-k merge (no model, no HTTP: those run in the router as on one node). Reproduce:
`python scripts/bench/sharded.py --n {args.n}`.

* Same results: {equal} of {len(queries)} queries returned the single node's ids in the same order,
  {ties} more the same scores with ids differing only where scores tie (at the k-th place a
  record past k had the bit-equal score; FAISS and the merge break such ties differently);
  largest score difference {max_diff:.1e}.
* First sharded query {first_s:.1f} s (each shard writes its per-Parquet-shard Flat files once and
  maps them); build of the collection {build_s:.0f} s.

| clients | one node QPS | one node p50 / p95 ms | {args.shards} shards QPS | {args.shards} shards p50 / p95 ms |
|---|---|---|---|---|
{rows}

Shard replica memory after the run (MB; file-backed = the memory-mapped vectors, page cache the
kernel can drop; anonymous = the process's own heap):

| shard | RSS | file-backed | anonymous |
|---|---|---|---|
{mem_rows}
""",
    )
    print(result)


if __name__ == "__main__":
    main()
