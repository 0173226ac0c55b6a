"""Choose a FAISS index type from the collection size and a memory budget (as autofaiss does).

* up to ``flat_max`` vectors (default 1M) and within budget: exact ``Flat``;
* above: ``IVF{nlist},Flat`` (exact distances within the probed lists) when the raw vectors
  fit the budget, else ``IVF{nlist},PQ{m}`` (``m`` bytes a vector);
* ``nlist`` ≈ 4·√n, a power of two, with at least 39 training points per list; the training
  sample grows with nlist (``train_size``: 64 a list, at least 200,000), capped by the budget;
* compressed codes (PQ) are searched with an exact re-rank of a shortlist (``refine_k``,
  search/vector_index.py), tuned together with nprobe.

Past the budget (nothing fits in RAM), the index goes on disk: an IVF-PQ whose inverted lists
are a memory-mapped file (search/ondisk.py); ``--on-disk`` / ``--in-memory`` force the placement.

HNSW is available through an explicit ``--index-spec "HNSW32"``; it is never chosen
automatically because it cannot remove vectors, which deletes and updates need (an HNSW
index is rebuilt on delete instead).

An explicit spec is stored in the manifest and kept across rebuilds until reset with
``--index-spec auto``.
"""

from __future__ import annotations

import math
import re

from blipsearch.errors import InvalidInputError
from blipsearch.limits import FLAT_MAX_VECTORS
from search.specs import FLAT_SPEC, ID_MAP, without_id_map

FLAT = FLAT_SPEC
BYTES_PER_FLOAT = 4
IDMAP_BYTES = 16  # id array + reverse map entry, per vector
MIN_POINTS_PER_LIST = 39
TRAIN_MIN = 200_000  # the smallest training sample, whatever the nlist
TRAIN_PER_LIST = 64


def nlist_for(n: int) -> int:
    target = 4 * math.sqrt(max(n, 1))
    nlist = 2 ** round(math.log2(max(target, 1)))
    while nlist > 1 and n < MIN_POINTS_PER_LIST * nlist:
        nlist //= 2
    return max(nlist, 1)


def train_size(spec: str, dim: int, memory_budget_bytes: int) -> int:
    """Training sample for ``spec``: at least TRAIN_MIN vectors and TRAIN_PER_LIST a list (k-means
    of more lists needs more points, and a sample far below the data's cluster count merges
    clusters), at most a quarter of the memory budget as float32."""
    nl = re.search(r"IVF(\d+)", spec)
    want = max(TRAIN_MIN, TRAIN_PER_LIST * int(nl.group(1))) if nl else TRAIN_MIN
    cap = max(MIN_POINTS_PER_LIST, memory_budget_bytes // 4 // (dim * BYTES_PER_FLOAT))
    return int(min(want, cap))


def memory_bytes(spec: str, n: int, dim: int) -> int:
    """Approximate resident size of ``spec`` holding ``n`` vectors."""
    m = re.search(r"PQ(\d+)", spec)
    per_vector = int(m.group(1)) if m else dim * BYTES_PER_FLOAT
    links = re.search(r"HNSW(\d*)", spec, re.IGNORECASE)
    if links:
        per_vector += 2 * int(links.group(1) or 32) * 4
    nl = re.search(r"IVF(\d+)", spec)
    centroids = int(nl.group(1)) * dim * BYTES_PER_FLOAT if nl else 0
    return n * (per_vector + IDMAP_BYTES) + centroids


def choose_spec(n: int, dim: int, memory_budget_bytes: int, flat_max: int = FLAT_MAX_VECTORS) -> str:
    """The index spec for ``n`` vectors of ``dim`` within ``memory_budget_bytes``."""
    if n <= flat_max and memory_bytes(FLAT, n, dim) <= memory_budget_bytes:
        return FLAT
    nlist = nlist_for(n)
    ivf_flat = f"{ID_MAP}IVF{nlist},Flat"
    if memory_bytes(ivf_flat, n, dim) <= memory_budget_bytes:
        return ivf_flat
    for m in (dim // 4, dim // 8, dim // 16):
        if m and dim % m == 0:
            spec = f"{ID_MAP}IVF{nlist},PQ{m}"
            if memory_bytes(spec, n, dim) <= memory_budget_bytes:
                return spec
    raise InvalidInputError(
        f"{n} vectors of dim {dim} do not fit a {memory_budget_bytes / 2**30:.1f} GiB index budget even as "
        "IVF-PQ; raise BLIPSEARCH_INDEX_MEMORY_GB or give --index-spec."
    )


def on_disk_spec(n: int, dim: int) -> str:
    """The on-disk default: IVF-PQ with dim/4 bytes a vector (only centroids and PQ tables in RAM)."""
    m = next((m for m in (dim // 4, dim // 8, dim // 16) if m and dim % m == 0), 0)
    return f"{ID_MAP}IVF{nlist_for(n)},PQ{m}" if m else f"{ID_MAP}IVF{nlist_for(n)},Flat"


def choose_placement(
    n: int, dim: int, memory_budget_bytes: int, flat_max: int = FLAT_MAX_VECTORS, on_disk: bool | None = None
) -> tuple[str, bool]:
    """(spec, on_disk) for ``n`` vectors: in memory while some index fits the budget, else an
    on-disk IVF-PQ (search/ondisk.py). ``on_disk`` True/False forces the placement; on disk the
    index is IVF (IVF-Flat when its raw vectors fit the budget, else IVF-PQ)."""
    if on_disk is False:
        return choose_spec(n, dim, memory_budget_bytes, flat_max), False
    if on_disk:
        try:
            return choose_spec(n, dim, memory_budget_bytes, flat_max=-1), True
        except InvalidInputError:
            return on_disk_spec(n, dim), True
    try:
        return choose_spec(n, dim, memory_budget_bytes, flat_max), False
    except InvalidInputError:
        return on_disk_spec(n, dim), True


def is_compressed(spec: str) -> bool:
    """Whether ``spec`` stores lossy codes (PQ, SQ, RQ/LSQ, LSH), which an exact refine improves;
    SQfp32 and Flat codes are exact."""
    return bool(re.search(r"(?:^|,|_)(?:O?PQ|SQ(?!fp32)|RQ|LSQ|PRQ|PLSQ|LSH)", family(spec), re.IGNORECASE))


def is_ivf(spec: str) -> bool:
    return family(spec).upper().startswith("IVF")


def family(spec: str) -> str:
    """Flat / IVF{nlist},Flat / ...: specs of one family need no rebuild as a collection grows
    within a factor of 4 of the nlist it was built for."""
    return without_id_map(spec)


def needs_rebuild(current: str, wanted: str) -> bool:
    """Whether an auto-chosen index ``current`` should be rebuilt as ``wanted``."""
    a, b = family(current), family(wanted)
    if a == b:
        return False
    na, nb = re.search(r"IVF(\d+)", a), re.search(r"IVF(\d+)", b)
    if na and nb and re.sub(r"IVF\d+", "", a) == re.sub(r"IVF\d+", "", b):
        ratio = int(nb.group(1)) / int(na.group(1))
        return ratio >= 4 or ratio <= 0.25  # nlist off by 4x: lists too long or too sparse
    return True
