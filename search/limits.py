"""Query defaults and limits, defined once: the engine checks them, and the CLI options, the API
schemas and the docs reference them (never repeat these numbers as literals)."""

from __future__ import annotations

from blipsearch.limits import DEFAULT_REFINE_K, MAX_REFINE_K
from rerank.fusion import FUSIONS, RRF_K

DEFAULT_K = 10
MAX_K = 1000  # results per query
DEFAULT_RERANK_K = 64  # ITC shortlist re-ranked by ITM
MAX_RERANK_K = 1024
DEFAULT_FUSION = "itm+itc"  # LAVIS: ITM match logit + ITC cosine
MODES = ("vector", "keyword", "hybrid")
HYBRID_DEPTH = 100  # each list contributes its top 100 to a hybrid fusion
MAX_NPROBE = 65536  # IVF lists probed per query
MAX_EF_SEARCH = 65536  # HNSW search depth per query

__all__ = [
    "DEFAULT_FUSION",
    "DEFAULT_K",
    "DEFAULT_REFINE_K",
    "DEFAULT_RERANK_K",
    "FUSIONS",
    "HYBRID_DEPTH",
    "MAX_EF_SEARCH",
    "MAX_K",
    "MAX_NPROBE",
    "MAX_REFINE_K",
    "MAX_RERANK_K",
    "MODES",
    "RRF_K",
]
