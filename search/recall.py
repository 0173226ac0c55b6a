"""Recall of an approximate index against exact search, and tuning of its per-query knobs.

Held-out queries: ``n`` records drawn at random are used as queries (their own stored
vectors; BLIP-2 records query with all 32). The record itself is dropped from both result
lists, so recall@k measures how many of its k true nearest *other* records the index finds.
Ground truth is an exact inner-product search over every live vector.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from search.vector_index import VectorIndex
from storage.collection import Collection

log = logging.getLogger(__name__)
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
EF_SEARCHES = (16, 32, 64, 128, 256, 512)


def _sample(coll: Collection, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, VectorIndex]:
    """(query ids, their vectors, an exact index over everything)."""
    m = coll.manifest
    ids, emb = coll.all_embeddings()
    exact = VectorIndex.empty("IDMap2,Flat", m.dim, m.vectors_per_item)
    exact.add(ids, emb)
    pick = np.random.default_rng(seed).choice(len(ids), min(n, len(ids)), replace=False)
    return ids[pick], emb[pick], exact


def _topk(index: VectorIndex, q: np.ndarray, rid: int, k: int, params: Any) -> set[int]:
    got, _ = index.search(q, k + 1, params=params)
    return set([int(i) for i in got if int(i) != rid and i >= 0][:k])


def knob_values(index: VectorIndex) -> tuple[str | None, list[int]]:
    kind = index.kind
    if kind == "ivf":
        return "nprobe", [v for v in NPROBES if v <= index.nlist]
    if kind == "hnsw":
        return "efSearch", list(EF_SEARCHES)
    return None, []


def eval_recall(
    coll: Collection, index: VectorIndex, *, queries: int = 200, k: int = 10, seed: int = 0
) -> dict[str, Any]:
    """recall@k and QPS of ``index`` for each value of its search knob (nprobe / efSearch)."""
    if coll.manifest.count < 2:
        return {"queries": 0, "k": k, "rows": [], "note": "fewer than 2 records: nothing to measure"}
    qids, qvecs, exact = _sample(coll, queries, seed)
    truth = [_topk(exact, q, int(r), k, None) for r, q in zip(qids, qvecs, strict=True)]
    knob, values = knob_values(index)
    rows = []
    tried: list[int | None] = list(values) if values else [None]
    for value in tried:
        params = index.make_params(**({knob_arg(knob): value} if knob else {}))
        t0 = time.perf_counter()
        found = [_topk(index, q, int(r), k, params) for r, q in zip(qids, qvecs, strict=True)]
        dt = time.perf_counter() - t0
        recall = float(np.mean([len(f & t) / max(len(t), 1) for f, t in zip(found, truth, strict=True)]))
        row: dict[str, Any] = {"recall_at_k": round(recall, 4), "qps": round(len(qids) / dt, 1)}
        if knob:
            row[knob] = value
        rows.append(row)
        if knob and recall >= 0.999:
            break
    return {"queries": len(qids), "k": k, "knob": knob, "rows": rows}


def knob_arg(knob: str | None) -> str:
    return "ef_search" if knob == "efSearch" else "nprobe"


def tune(coll: Collection, index: VectorIndex, target: float, *, queries: int = 200) -> dict[str, int]:
    """The smallest nprobe / efSearch reaching ``target`` recall@10 (the largest tried if none does)."""
    knob, _ = knob_values(index)
    if knob is None:
        return {}
    result = eval_recall(coll, index, queries=queries)
    rows = result["rows"]
    if not rows:
        return {}
    best = next((r for r in rows if r["recall_at_k"] >= target), None)
    if best is None:
        best = rows[-1]
        log.warning(
            "%s: %s reaches recall@10 %.3f at best (%s=%s), below the target %.2f; consider a finer index "
            "(more PQ bytes, IVF-Flat, or Flat) via --index-spec or a larger BLIPSEARCH_INDEX_MEMORY_GB",
            coll.name,
            index.spec,
            best["recall_at_k"],
            knob,
            best[knob],
            target,
        )
    return {knob: int(best[knob])}
