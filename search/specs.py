"""FAISS factory specs and the record-id ↔ FAISS-id layout, written once.

Every index holds record ids as FAISS ids (``IDMap2`` wraps indexes that do not store ids
themselves). A record with ``v`` vectors (BLIP-2: one per Q-Former query token) owns the FAISS
ids ``rid * v .. rid * v + v - 1``; with one vector a FAISS id is the record id.
"""

from __future__ import annotations

import re

import numpy as np

ID_MAP = "IDMap2,"  # the wrapper that maps FAISS ids to record ids
FLAT_SPEC = f"{ID_MAP}Flat"  # exact inner product: the default, and every index shard's spec
_ID_MAP_RE = re.compile(r"^IDMap2?,")


def with_id_map(spec: str) -> str:
    """``spec`` wrapped in ``IDMap2`` unless it already names an id map."""
    return spec if spec.startswith("IDMap") else f"{ID_MAP}{spec}"


def without_id_map(spec: str) -> str:
    """``spec`` without its id-map wrapper (``IDMap2,IVF64,Flat`` → ``IVF64,Flat``)."""
    return _ID_MAP_RE.sub("", spec)


def faiss_ids(ids: np.ndarray, vectors_per_item: int) -> np.ndarray:
    """The FAISS ids of records ``ids``: each record's ``vectors_per_item`` ids, in record order."""
    ids = np.asarray(ids, dtype=np.int64)
    v = vectors_per_item
    if v == 1:
        return ids
    return (ids[:, None] * v + np.arange(v, dtype=np.int64)[None, :]).reshape(-1)
