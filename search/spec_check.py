"""Index factory specs checked before FAISS sees them.

FAISS validates some parameters with exceptions, but others only with C++ assertions that abort
the process (``HNSW0``), or not at all (``RR0`` segfaults, ``NSG`` builds can hang). A spec is
therefore parsed here against the components this project builds (transforms, IVF/IMI/HNSW
coarse quantizers, Flat/PQ/SQ codes, an ``RFlat`` refine) with every number in its range, and
anything else is refused with a message naming the rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from blipsearch.errors import InvalidInputError

MAX_COMPONENTS = 5
MAX_NLIST = 1 << 24
MAX_HNSW_M = 256
MAX_DIM = 65536

_EXAMPLES = "e.g. Flat, HNSW32, IVF1024,Flat, IVF4096,PQ64, OPQ16_64,IVF256,PQ16, IVF64,SQ8"


def _range(what: str, value: str, lo: int, hi: int) -> str | None:
    n = int(value)
    return None if lo <= n <= hi else f"{what} must be {lo}..{hi}, not {n}"


def _transform(m: re.Match[str], dim: int) -> str | None:
    kind, first, second = m.group(1), m.group(2), m.group(3)
    if kind == "OPQ":
        return _range("OPQ sub-quantizers", first, 1, dim) or (second and _range("OPQ output dim", second, 1, MAX_DIM))
    return _range(f"{kind} output dim", first, 1, MAX_DIM)


def _ivf(m: re.Match[str], dim: int) -> str | None:
    return _range("IVF lists", m.group(1), 1, MAX_NLIST) or (m.group(2) and _range("HNSW M", m.group(2), 2, MAX_HNSW_M))


def _pq(m: re.Match[str], dim: int) -> str | None:
    return _range("PQ sub-quantizers", m.group(1), 1, dim) or (m.group(2) and _range("PQ bits", m.group(2), 1, 16))


_Rule = Callable[[re.Match[str], int], "str | None"]
_RULES: list[tuple[re.Pattern[str], _Rule]] = [
    (re.compile(r"(OPQ|PCAW?R?|RR)(\d+)(?:_(\d+))?"), _transform),
    (re.compile(r"IVF(\d+)(?:_HNSW(\d+))?"), _ivf),
    (re.compile(r"IMI2x(\d+)"), lambda m, d: _range("IMI bits", m.group(1), 1, 12)),
    (re.compile(r"HNSW(\d+)"), lambda m, d: _range("HNSW M", m.group(1), 2, MAX_HNSW_M)),
    (re.compile(r"PQ(\d+)(?:x(\d+))?(?:fs|np)?"), _pq),
    (re.compile(r"SQ(?:4|6|8|fp16|bf16|fp32)|Flat|RFlat"), lambda m, d: None),
]


def check_spec(spec: str, dim: int) -> None:
    """Raise InvalidInputError unless ``spec`` is a factory string this project can build safely."""
    body = re.sub(r"^IDMap2?,", "", spec.strip())
    parts = body.split(",")
    if not body or len(parts) > MAX_COMPONENTS:
        raise InvalidInputError(
            f"Invalid FAISS index spec {spec!r}: give 1..{MAX_COMPONENTS} components ({_EXAMPLES})."
        )
    for part in parts:
        for pattern, rule in _RULES:
            m = pattern.fullmatch(part)
            if m:
                problem = rule(m, dim)
                if problem:
                    raise InvalidInputError(f"Invalid FAISS index spec {spec!r}: {problem}.")
                break
        else:
            raise InvalidInputError(f"Invalid FAISS index spec {spec!r}: unsupported component {part!r} ({_EXAMPLES}).")
