"""Duplicate groups of a collection, in tiers, each with its reasons and a proposed keeper.

Tiers, strongest first (a record is in at most one group of the last three):

* ``exact``: one content (sha256) at several paths. Records are unique by sha256, so these are
  the paths ``sync`` saw holding one record's bytes (storage/sync_state.py); collections indexed
  without ``sync`` have no such paths, and the tier says so.
* ``reencoded``: the same picture re-encoded or resized: PDQ distance ≤ ``pdq_distance`` *and* ITC
  similarity ≥ ``reencoded_similarity``.
* ``burst``: different shots taken within ``burst_seconds`` of each other (both have a
  ``taken_at``, not equal) with ITC similarity ≥ ``burst_similarity``. Two capture times are two
  shots, not copies, so such pairs are never called near-duplicates or re-encodings (however
  close their PDQ hashes). Skipped (with the reason) when the records have no ``taken_at``.
* ``near``: ITC similarity ≥ ``near_similarity``.

Pairs come from a FAISS range search over the collection's own index with every record's stored
vector as a query (batched; ids the index still holds but the records tombstoned are dropped),
then re-scored exactly from the stored vectors, so a compressed index only widens the search
radius. Where the index cannot range-search (a sharded index, multi-vector BLIP-2 records), an
exact flat index over the records' (mean) vectors is used. Groups are connected components of
each tier's pairs. The keeper is the largest (pixels), then the original format (RAW, HEIC,
TIFF before JPEG, PNG, WebP), then the most bytes, the earliest taken, the earliest added.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from blipsearch.config import Settings
from search import faiss_backend as fb
from storage import sync_state
from storage.collection import Collection
from storage.schema import record_schema

log = logging.getLogger(__name__)
TIERS = ("exact", "reencoded", "burst", "near")
FORMAT_RANK = {
    **dict.fromkeys(("dng", "cr2", "cr3", "nef", "arw", "orf", "rw2", "raf", "pef", "srw", "raw"), 0),
    **dict.fromkeys(("heic", "heif", "avif"), 1),
    "tiff": 2,
    "jpeg": 3,
    "mpo": 3,
    "png": 4,
    "webp": 5,
}
META = ("id", "uri", "sha256", "width", "height", "format", "bytes", "added_at", "pdq_hash")
QUERY_BATCH = 1024
RADIUS_SLACK = 0.02  # a compressed index's scores are approximate: search a little wider, re-score exactly


@dataclass(frozen=True)
class DuplicateOptions:
    reencoded_similarity: float = 0.97
    pdq_distance: int = 31
    near_similarity: float = 0.93
    burst_seconds: float = 10.0
    burst_similarity: float = 0.85

    @classmethod
    def from_settings(cls, s: Settings) -> DuplicateOptions:
        return cls(
            s.duplicate_reencoded_similarity,
            s.duplicate_pdq_distance,
            s.duplicate_near_similarity,
            s.duplicate_burst_seconds,
            s.duplicate_burst_similarity,
        )


class _Records:
    """The columns the tiers and keepers need, by position; ``pos`` maps record id → position."""

    def __init__(self, coll: Collection) -> None:
        names = record_schema(coll.manifest).names
        self.has_taken = "taken_at" in names
        cols = [c for c in (*META, "taken_at") if c in names]
        t = coll.read_table(cols)
        self.ids = t.column("id").to_numpy().astype(np.int64)
        self.rows = t.to_pylist()
        self.order = np.argsort(self.ids, kind="stable")
        self.sorted_ids = self.ids[self.order]
        self.taken = np.array([_seconds(r.get("taken_at")) for r in self.rows], np.float64)
        hashes = [r.get("pdq_hash") for r in self.rows]
        self.has_pdq = np.array([isinstance(h, str) and len(h) == 64 for h in hashes])
        self.pdq = np.zeros((len(hashes), 32), np.uint8)
        for i, h in enumerate(hashes):
            if self.has_pdq[i]:
                self.pdq[i] = np.frombuffer(bytes.fromhex(h), np.uint8)

    def pos(self, ids: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(self.sorted_ids, ids), max(len(self.ids) - 1, 0))
        return np.where(self.sorted_ids[at] == ids, self.order[at], -1) if len(self.ids) else at

    def pdq_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = np.unpackbits(self.pdq[a] ^ self.pdq[b], axis=1).sum(1).astype(np.int64)
        return np.where(self.has_pdq[a] & self.has_pdq[b], d, 10_000)


def _seconds(v: Any) -> float:
    if v is None:
        return math.nan
    ts = getattr(v, "timestamp", None)
    if ts is None:
        return math.nan
    try:
        return float(ts())
    except (OverflowError, OSError, ValueError):
        return math.nan


def _pooled(emb: np.ndarray) -> np.ndarray:
    """One unit vector per record (the mean of a multi-vector record's vectors)."""
    v = emb.reshape(len(emb), -1, emb.shape[-1]).mean(1) if emb.ndim == 3 else emb
    v = np.ascontiguousarray(v, np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _range_batches(coll: Collection, index: Any, radius: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(query ids, neighbour ids) pairs with similarity above ``radius``, per batch of queries."""
    vpi = coll.manifest.vectors_per_item
    usable = index is not None and vpi == 1 and hasattr(index, "cpu")
    flat = None
    if usable:
        params = index.make_params()
        try:
            index.cpu.range_search(np.zeros((1, coll.manifest.dim), np.float32), 2.0, params=params)
        except Exception as exc:  # noqa: BLE001 - a FAISS type without range search raises RuntimeError
            log.info("range search unavailable on %s (%s); exact flat search instead", index.spec, exc)
            usable = False
    if not usable:
        f = fb.faiss()
        ids, emb = coll.all_embeddings()
        flat = f.IndexIDMap(f.IndexFlatIP(coll.manifest.dim))
        if len(ids):
            flat.add_with_ids(_pooled(emb), ids.astype(np.int64))
        searcher, params = flat, None
    else:
        searcher = index.cpu
    for ids, emb in coll.iter_embeddings():
        q = _pooled(emb)
        for s in range(0, len(ids), QUERY_BATCH):
            lims, _, nb = searcher.range_search(q[s : s + QUERY_BATCH], radius, params=params)
            counts = np.diff(lims).astype(np.int64)
            yield np.repeat(ids[s : s + QUERY_BATCH], counts), nb.astype(np.int64)


def find_pairs(
    coll: Collection, index: Any, min_sim: float, rec: _Records
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (a, b), a < b, of record pairs with exact similarity ≥ ``min_sim``, and the similarities."""
    radius = min_sim - RADIUS_SLACK
    out_a, out_b = [], []
    for qa, qb in _range_batches(coll, index, radius):
        a, b = rec.pos(qa), rec.pos(qb)
        keep = (a >= 0) & (b >= 0) & (qa < qb)  # each pair once; tombstoned or self hits dropped
        out_a.append(a[keep])
        out_b.append(b[keep])
    if not out_a:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    a, b = np.concatenate(out_a), np.concatenate(out_b)
    sims = np.zeros(len(a), np.float32)
    for s in range(0, len(a), 65_536):  # exact similarities from the stored vectors
        va = _pooled(coll.embeddings_of(rec.ids[a[s : s + 65_536]]))
        vb = _pooled(coll.embeddings_of(rec.ids[b[s : s + 65_536]]))
        sims[s : s + 65_536] = (va * vb).sum(1)
    keep = sims >= min_sim
    return a[keep], b[keep], sims[keep]


def _components(n: int, a: np.ndarray, b: np.ndarray) -> list[list[int]]:
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        rx, ry = root(x), root(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    groups: dict[int, list[int]] = {}
    for x in sorted(set(a.tolist()) | set(b.tolist())):
        groups.setdefault(root(x), []).append(x)
    return [g for g in groups.values() if len(g) > 1]


def _keeper_key(r: dict[str, Any], taken: float) -> tuple[Any, ...]:
    fmt = str(r.get("format") or "").lower()
    added = r.get("added_at")
    return (
        -int(r.get("width") or 0) * int(r.get("height") or 0),
        FORMAT_RANK.get(fmt, 6),
        -int(r.get("bytes") or 0),
        taken if not math.isnan(taken) else math.inf,
        added.timestamp() if added is not None else math.inf,
        int(r["id"]),
    )


def _keeper_why(k: dict[str, Any], others: list[dict[str, Any]]) -> str:
    px = int(k.get("width") or 0) * int(k.get("height") or 0)
    if all(px > int(o.get("width") or 0) * int(o.get("height") or 0) for o in others):
        return f"largest ({k.get('width')}x{k.get('height')})"
    fmt = str(k.get("format") or "").lower()
    if all(FORMAT_RANK.get(fmt, 6) < FORMAT_RANK.get(str(o.get("format") or "").lower(), 6) for o in others):
        return f"as large as any, in the original format ({fmt})"
    if all(int(k.get("bytes") or 0) > int(o.get("bytes") or 0) for o in others):
        return "as large as any, same format, most bytes (least compressed)"
    return "as large as any, same format and size: the earliest taken (else added)"


def _member(rec: _Records, p: int) -> dict[str, Any]:
    r = rec.rows[p]
    out = {k: r.get(k) for k in ("id", "uri", "width", "height", "format", "bytes")}
    if rec.has_taken:
        t = r.get("taken_at")
        out["taken_at"] = t.isoformat() if t is not None else None
    return out


def _group(tier: str, members: list[int], rec: _Records, vecs: dict[int, np.ndarray], why: str) -> dict[str, Any]:
    keeper = min(members, key=lambda p: _keeper_key(rec.rows[p], float(rec.taken[p])))
    kv = vecs[keeper]
    rows = []
    for p in sorted(members, key=lambda p: int(rec.ids[p])):
        m = _member(rec, p)
        m["keeper"] = p == keeper
        m["similarity"] = round(float(kv @ vecs[p]), 4)
        d = int(rec.pdq_distance(np.array([keeper]), np.array([p]))[0])
        m["pdq_distance"] = d if d <= 256 else None
        dt = abs(float(rec.taken[p] - rec.taken[keeper]))
        m["seconds_apart"] = None if math.isnan(dt) else round(dt, 3)
        rows.append(m)
    others = [rec.rows[p] for p in members if p != keeper]
    sims = [m["similarity"] for m in rows if not m["keeper"]]
    scores: dict[str, Any] = {"min_similarity": min(sims)}
    pdqs = [m["pdq_distance"] for m in rows if not m["keeper"] and m["pdq_distance"] is not None]
    if pdqs:
        scores["max_pdq_distance"] = max(pdqs)
    secs = [m["seconds_apart"] for m in rows if not m["keeper"] and m["seconds_apart"] is not None]
    if secs:
        scores["max_seconds_apart"] = max(secs)
    return {
        "group": f"{tier}-{min(int(rec.ids[p]) for p in members)}",
        "tier": tier,
        "why": why,
        "keeper": int(rec.ids[keeper]),
        "keeper_why": _keeper_why(rec.rows[keeper], others),
        "scores": scores,
        "members": rows,
    }


def _exact_groups(coll: Collection, rec: _Records) -> list[dict[str, Any]]:
    by_sha = {r["sha256"]: p for p, r in enumerate(rec.rows)}
    out = []
    for sha, paths in sorted(sync_state.copies(coll.root, by_sha).items()):
        p = by_sha[sha]
        mtimes = {}
        for path in paths:
            try:
                mtimes[path] = os.stat(path).st_mtime
            except OSError:
                continue
        if len(mtimes) < 2:
            continue
        keeper = min(mtimes, key=lambda x: (mtimes[x], len(x), x))
        r = rec.rows[p]
        out.append(
            {
                "group": f"exact-{int(r['id'])}",
                "tier": "exact",
                "why": f"the same bytes (sha256 {sha[:12]}…) at {len(mtimes)} paths; one record, id {int(r['id'])}",
                "keeper": int(r["id"]),
                "keeper_path": keeper,
                "keeper_why": "the earliest modified copy (the original)",
                "scores": {"copies": len(mtimes)},
                "members": [{**_member(rec, p), "path": path, "keeper": path == keeper} for path in sorted(mtimes)],
            }
        )
    return out


def find_duplicates(
    coll: Collection, index: Any, options: DuplicateOptions = DuplicateOptions(), tiers: tuple[str, ...] = TIERS
) -> dict[str, Any]:
    """Every duplicate group of ``coll`` (see the module), with the tiers skipped and why."""
    coll.reload()
    rec = _Records(coll)
    skipped: dict[str, str] = {}
    groups: list[dict[str, Any]] = []
    if "exact" in tiers:
        groups += _exact_groups(coll, rec)
        if not sync_state.state_path(coll.root).is_file():
            skipped["exact"] = "no folder was synced into this collection: exact copies are known from `sync`"
    if "burst" in tiers and (not rec.has_taken or bool(np.isnan(rec.taken).all())):
        skipped["burst"] = "no record has a capture time (taken_at, read from EXIF at indexing)"
    if "reencoded" in tiers and not rec.has_pdq.any():
        skipped["reencoded"] = "no record has a PDQ hash (install pdqhash; `moderate backfill-pdq` fills them)"
    wanted = [t for t in ("reencoded", "burst", "near") if t in tiers and t not in skipped]
    o = options
    floors = {"reencoded": o.reencoded_similarity, "burst": o.burst_similarity, "near": o.near_similarity}
    if wanted and len(rec.ids) > 1:
        a, b, sims = find_pairs(coll, index, min(floors[t] for t in wanted), rec)
        tier = _classify(rec, a, b, sims, o)
        grouped = np.zeros(len(rec.ids), bool)
        in_groups = []
        for t in wanted:
            sel = (tier == TIERS.index(t)) & ~grouped[a] & ~grouped[b]
            for members in _components(len(rec.ids), a[sel], b[sel]):
                grouped[members] = True
                in_groups.append((t, members))
        flat = sorted({p for _, ms in in_groups for p in ms})
        vecs = dict(zip(flat, _pooled(coll.embeddings_of(rec.ids[flat])), strict=True)) if flat else {}
        for t, members in in_groups:
            groups.append(_group(t, members, rec, vecs, _why(t, o)))
    groups.sort(key=lambda g: (TIERS.index(g["tier"]), g["keeper"]))
    counts = {t: sum(1 for g in groups if g["tier"] == t) for t in tiers}
    return {"collection": coll.name, "groups": groups, "counts": counts, "skipped": skipped, "thresholds": vars(o)}


def _classify(rec: _Records, a: np.ndarray, b: np.ndarray, sims: np.ndarray, o: DuplicateOptions) -> np.ndarray:
    """Each pair's tier (an index into TIERS; -1: none)."""
    dt = np.abs(rec.taken[a] - rec.taken[b])
    two_shots = ~np.isnan(dt) & (dt > 0)
    tier = np.full(len(a), -1, np.int64)
    tier[sims >= o.near_similarity] = TIERS.index("near")
    re = (rec.pdq_distance(a, b) <= o.pdq_distance) & (sims >= o.reencoded_similarity)
    tier[re & ~two_shots] = TIERS.index("reencoded")  # two capture times are two shots, never copies
    burst = two_shots & (dt <= o.burst_seconds) & (sims >= o.burst_similarity)
    tier[burst] = TIERS.index("burst")
    return tier


def _why(tier: str, o: DuplicateOptions) -> str:
    if tier == "reencoded":
        return (
            f"the same picture re-encoded or resized: PDQ distance <= {o.pdq_distance} and "
            f"ITC similarity >= {o.reencoded_similarity}"
        )
    if tier == "burst":
        return f"shots taken within {o.burst_seconds:g}s of each other, ITC similarity >= {o.burst_similarity}"
    return f"near-duplicates: ITC similarity >= {o.near_similarity}"
