"""``sync`` of an unchanged folder, and ``duplicates`` over a large collection.

1. A folder of ``--files`` small files (``--file-kb`` sets their size), recorded in a
   vector-only collection (uris and sha256 of the real files, synthetic vectors: no model runs).
   The first sync hashes every file (no state yet: the baseline); the second finds them
   unchanged by stat and reads none (one scandir walk, one lstat per file). Also shown: the
   indexer's folder walk (indexer/sources/files.py, which resolves each file) alone.
   ``--sync-only`` keeps the duplicates rows of the last result.
2. ``find_duplicates`` over ``--records`` synthetic clustered vectors with planted near-duplicate
   pairs, in a real FAISS index (flat, then IVF): seconds, and how many planted pairs were found.

    flock /tmp/bench.lock nice -n -10 python scripts/bench/library_sync.py --files 10000 --records 100000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, machine, machine_line, update_markdown, write_result

sys.path.insert(0, str(ROOT))

DIM = 256
MODEL = {"model_id": "synthetic", "fingerprint": "b" * 16, "family": "blip", "dim": DIM, "vectors_per_image": 1}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def bench_sync(n: int, tmp: Path, file_kb: int = 0) -> dict[str, float | int]:
    from indexer.sources.files import walk
    from indexer.sync import file_sha256, sync_folders
    from storage.collection import Collection

    lib = tmp / "lib"
    rng = np.random.default_rng(0)
    for i in range(n):
        d = lib / f"{i // 500:03d}"
        d.mkdir(parents=True, exist_ok=True)
        size = file_kb * 1024 if file_kb else int(rng.integers(200, 2000))
        (d / f"f{i:06d}.jpg").write_bytes(rng.bytes(size))
    old = time.time() - 3600
    for p in lib.rglob("*"):
        os.utime(p, (old, old))
    paths = [str(p) for p in walk(lib)]
    coll = Collection.create(tmp / "data", "lib", model=MODEL)
    for s in range(0, n, 5000):
        part = paths[s : s + 5000]
        rows = {
            "uri": part,
            "sha256": [file_sha256(p) for p in part],
            "width": [1] * len(part),
            "height": [1] * len(part),
            "bytes": [1] * len(part),
        }
        coll.append_aligned(rows, _unit(rng.normal(size=(len(part), DIM))))

    def no_index(*_: object) -> None:
        raise AssertionError("nothing should be indexed")

    t0 = time.perf_counter()
    listed = sum(1 for _ in walk(lib))
    t_walk = time.perf_counter() - t0
    first = sync_folders(coll, [lib], no_index)  # type: ignore[arg-type]
    second = sync_folders(coll, [lib], no_index)  # type: ignore[arg-type]
    third = sync_folders(coll, [lib], no_index)  # type: ignore[arg-type]
    assert listed == n and first.hashed == n and second.hashed == 0 and second.unchanged == n
    return {
        "files": n,
        "file_bytes": file_kb * 1024 if file_kb else "200-2000",
        "walk_s": round(t_walk, 3),
        "first_sync_hash_all_s": first.seconds,
        "unchanged_sync_s": min(second.seconds, third.seconds),
        "speedup_vs_rehash": round(first.seconds / max(min(second.seconds, third.seconds), 1e-9), 2),
    }


def bench_duplicates(n: int, tmp: Path, specs: tuple[str, ...]) -> list[dict[str, float | int | str]]:
    from search import index_store
    from search.duplicates import DuplicateOptions, find_duplicates
    from storage.collection import Collection

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(2000, DIM))
    x = _unit(centres[rng.integers(0, 2000, n)] + 0.9 * rng.normal(size=(n, DIM)))
    planted = n // 100  # pairs (2i, 2i+1) for i < planted: cosine ~0.97
    noise = _unit(rng.normal(size=(planted, DIM)))
    x[1 : 2 * planted : 2] = _unit(x[0 : 2 * planted : 2] + 0.25 * noise)
    rows = {"uri": [f"mem://{i}" for i in range(n)], "sha256": [f"{i:064x}" for i in range(n)]}
    rows |= {"width": [1] * n, "height": [1] * n, "bytes": [1] * n}
    out = []
    for spec in specs:
        coll = Collection.create(tmp / f"dup-{spec.replace(',', '_')}", "d", model=MODEL)
        for s in range(0, n, 20_000):
            coll.append_aligned({k: v[s : s + 20_000] for k, v in rows.items()}, x[s : s + 20_000])
        t0 = time.perf_counter()
        index_store.refresh(coll, spec=spec)
        t_build = time.perf_counter() - t0
        index, _ = index_store.load(coll)
        if spec != "Flat":
            index.defaults["nprobe"] = 32
        t0 = time.perf_counter()
        res = find_duplicates(coll, index, DuplicateOptions(near_similarity=0.95), ("near",))
        t_dup = time.perf_counter() - t0
        pairs = {tuple(m["id"] for m in g["members"]) for g in res["groups"]}
        found = sum(1 for i in range(planted) if (2 * i, 2 * i + 1) in pairs)
        out.append(
            {
                "index": spec,
                "records": n,
                "build_s": round(t_build, 2),
                "duplicates_s": round(t_dup, 2),
                "groups": len(res["groups"]),
                "planted_pairs": planted,
                "planted_found": found,
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--no-flat", action="store_true", help="Only the IVF index (the flat one is the slow exact run).")
    ap.add_argument("--file-kb", type=int, default=0, help="Size of each file (default: 200-2000 bytes).")
    ap.add_argument("--sync-only", action="store_true", help="Only the sync part; duplicates rows from the last run.")
    args = ap.parse_args()
    m = machine()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        sync = bench_sync(args.files, Path(d), args.file_kb)
        if args.sync_only:
            last = json.loads((ROOT / "bench-results" / "library_sync.json").read_text())
            dups, dup_load = last["duplicates"], last.get("duplicates_load_avg_1m", last.get("load_avg_1m"))
        else:
            specs = ("IVF1024,Flat",) if args.no_flat else ("Flat", "IVF1024,Flat")
            dups, dup_load = bench_duplicates(args.records, Path(d), specs), load[0]
    end = os.getloadavg()
    result = {"machine": m, "load_avg_1m": load[0], "load_avg_end": end, "sync": sync, "duplicates": dups}
    write_result("library_sync", result | {"duplicates_load_avg_1m": dup_load})
    lines = [
        "## Folder sync and duplicates (`scripts/bench/library_sync.py`)",
        "",
        f"Machine: {machine_line(m)}; shared with other jobs (load average {load[0]:.1f} {load[1]:.1f} "
        f"{load[2]:.1f} at start, {end[0]:.1f} {end[1]:.1f} {end[2]:.1f} at the end), run under `nice -n -10`. "
        f"Reproduce: `python scripts/bench/library_sync.py --files {args.files} --records {args.records}`"
        + (
            f" (this run `--sync-only`: the duplicates rows are from the previous run, load average {dup_load:.1f})"
            if args.sync_only
            else ""
        )
        + ". The unchanged sync is one scandir walk "
        "with one lstat per file against the stored (size, mtime_ns, inode); the walk column is the "
        "indexer's folder walk, which resolves every file.",
        "",
        "| sync of a folder | files | indexer walk s | first sync (hash all) s | unchanged sync s | vs re-hash |",
        "|---|---|---|---|---|---|",
        f"| unchanged, {sync['file_bytes']} bytes each | {sync['files']} | {sync['walk_s']} | "
        f"{sync['first_sync_hash_all_s']} | "
        f"{sync['unchanged_sync_s']} | {sync['speedup_vs_rehash']}x faster |",
        "",
        "| duplicates (near tier, ITC ≥ 0.95) | records | index build s | duplicates s | groups "
        "| planted pairs found |",
        "|---|---|---|---|---|---|",
    ]
    for r in dups:
        lines.append(
            f"| {r['index']} | {r['records']} | {r['build_s']} | {r['duplicates_s']} | {r['groups']} | "
            f"{r['planted_found']} / {r['planted_pairs']} |"
        )
    update_markdown("library_sync", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
