"""Recall of an approximate index against exact search, and tuning of its per-query knobs.

Held-out queries: ``n`` records drawn at random are used as queries (their own stored
vectors; BLIP-2 records query with all 32). The record itself is dropped from both result
lists, so recall@k measures how many of its k true nearest *other* records the index finds.
Ground truth is an exact inner-product search over every live vector (for on-disk indexes a
blocked pass over the shards, one at a time).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from search.faiss_index import FaissIndex
from search.specs import FLAT_SPEC
from search.vector_index import VectorIndex
from storage.collection import Collection

log = logging.getLogger(__name__)
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
EF_SEARCHES = (16, 32, 64, 128, 256, 512)


def _sample(coll: Collection, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, VectorIndex]:
    """(query ids, their vectors, an exact index over everything)."""
    m = coll.manifest
    ids, emb = coll.all_embeddings()
    exact = VectorIndex.empty(FLAT_SPEC, m.dim, m.vectors_per_item)
    exact.add(ids, emb)
    pick = np.random.default_rng(seed).choice(len(ids), min(n, len(ids)), replace=False)
    return ids[pick], emb[pick], exact


def _blocked_truth(coll: Collection, n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[set[int]]]:
    """(query ids, their vectors, exact top-``k`` other records) by a blocked brute-force pass,
    one shard at a time: memory is the queries plus one shard (for on-disk indexes)."""
    m = coll.manifest
    total = sum(s.live_rows for s in m.shards)
    pick = np.sort(np.random.default_rng(seed).choice(total, min(n, total), replace=False))
    qids = np.zeros(len(pick), np.int64)
    qvecs = np.zeros((len(pick), m.vectors_per_item, m.dim), np.float32)
    start = 0
    for ids, emb in coll.iter_embeddings():
        lo, hi = np.searchsorted(pick, [start, start + len(ids)])
        qids[lo:hi] = ids[pick[lo:hi] - start]
        qvecs[lo:hi] = emb.reshape(len(ids), m.vectors_per_item, m.dim)[pick[lo:hi] - start]
        start += len(ids)
    best_s = np.full((len(qids), k + 1), -np.inf, np.float32)
    best_i = np.full((len(qids), k + 1), -1, np.int64)
    flat_q = qvecs.reshape(-1, m.dim)
    for ids, emb in coll.iter_embeddings():
        sims = emb.reshape(-1, m.dim) @ flat_q.T  # [n*v, nq*v]
        sims = sims.reshape(len(ids), m.vectors_per_item, len(qids), m.vectors_per_item).max(axis=(1, 3)).T
        all_s = np.concatenate([best_s, sims], axis=1)
        all_i = np.concatenate([best_i, np.broadcast_to(ids, sims.shape)], axis=1)
        top = np.argsort(-all_s, axis=1, kind="stable")[:, : k + 1]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    truth = [set([int(i) for i in row if i != r and i >= 0][:k]) for r, row in zip(qids, best_i, strict=True)]
    squeeze = qvecs[:, 0] if m.vectors_per_item == 1 else qvecs
    return qids, squeeze, truth


def _topk(index: FaissIndex, q: np.ndarray, rid: int, k: int, params: Any) -> set[int]:
    got, _ = index.search(q, k + 1, params=params)
    return set([int(i) for i in got if int(i) != rid and i >= 0][:k])


def knob_values(index: FaissIndex) -> tuple[str | None, list[int]]:
    kind = index.kind
    if kind == "ivf":
        return "nprobe", [v for v in NPROBES if v <= index.nlist]
    if kind == "hnsw":
        return "efSearch", list(EF_SEARCHES)
    return None, []


def eval_recall(
    coll: Collection, index: FaissIndex, *, queries: int = 200, k: int = 10, seed: int = 0
) -> dict[str, Any]:
    """recall@k and QPS of ``index`` for each value of its search knob (nprobe / efSearch)."""
    if coll.manifest.count < 2:
        return {"queries": 0, "k": k, "rows": [], "note": "fewer than 2 records: nothing to measure"}
    if isinstance(index, VectorIndex):  # in memory: so is an exact copy
        qids, qvecs, exact = _sample(coll, queries, seed)
        truth = [_topk(exact, q, int(r), k, None) for r, q in zip(qids, qvecs, strict=True)]
    else:  # an on-disk index: the collection may not fit in memory
        qids, qvecs, truth = _blocked_truth(coll, queries, k, seed)
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
    refine = index.defaults.get("refine_k", 0) if index.compressed else 0  # measured with the exact re-rank
    return {"queries": len(qids), "k": k, "knob": knob, "refine_k": refine, "rows": rows}


def knob_arg(knob: str | None) -> str:
    return "ef_search" if knob == "efSearch" else "nprobe"


def tune(coll: Collection, index: FaissIndex, target: float, *, queries: int = 200) -> dict[str, int]:
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
