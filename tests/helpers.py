"""Seeded, structured test images (shapes and gradients, varied sizes) and brute-force oracles."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from blipsearch.synthetic import make_image, write_images

__all__ = [
    "FLOAT_TIE",
    "assert_same_ranking",
    "brute_force_scores",
    "brute_force_topk",
    "make_image",
    "rank_bounds",
    "recall_bounds",
    "write_bad_files",
    "write_images",
]

# Scores closer than this are float ties: kernels (AVX2, AVX-512, bf16 dot products, batch sizes,
# FAISS vs numpy) may order them either way. Real differences between implementations of the
# same fp32 computation are ~1e-7; tests compare rankings up to ties of this size.
FLOAT_TIE = 1e-5


def write_bad_files(folder: Path) -> dict[str, Path]:
    """Corrupt, truncated, zero-byte, non-image and huge-dimension files."""
    folder.mkdir(parents=True, exist_ok=True)
    good = io.BytesIO()
    make_image(99_999, (200, 150)).save(good, "JPEG")
    data = good.getvalue()
    files = {
        "corrupt": folder / "corrupt.jpg",
        "truncated": folder / "truncated.jpg",
        "empty": folder / "empty.png",
        "text": folder / "readme.txt",
        "huge": folder / "huge.png",
    }
    files["corrupt"].write_bytes(data[:20] + bytes(np.random.default_rng(0).integers(0, 255, 4000, dtype=np.uint8)))
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["empty"].write_bytes(b"")
    files["text"].write_text("not an image\n")
    Image.new("1", (20_000, 20_000)).save(files["huge"], "PNG")  # 400 Mpx, a few KB on disk
    return files


def brute_force_scores(query: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Exact max-sim score of every item (float64): query [d] or [nq, d]; embeddings [n, d] or [n, v, d]."""
    q = query.reshape(-1, query.shape[-1]).astype(np.float64)
    e = embeddings.reshape(len(embeddings), -1, embeddings.shape[-1]).astype(np.float64)
    return np.einsum("qd,nvd->nqv", q, e).reshape(len(e), -1).max(axis=1)


def assert_same_ranking(
    got_ids: Sequence[int] | np.ndarray, ids: np.ndarray, scores: np.ndarray, k: int, tol: float = FLOAT_TIE
) -> None:
    """``got_ids`` is the exact best-first top ``k`` of candidates ``ids`` with reference ``scores``,
    up to float ties: as many hits as there should be, no repeats, and at every rank the hit's
    reference score equals the reference's score at that rank within ``tol``. Where the scores
    are further apart than ``tol`` this is id-for-id equality; only near-equal candidates may swap.
    """
    got = [int(i) for i in got_ids]
    assert len(got) == min(k, len(ids)), (len(got), k, len(ids))
    assert len(set(got)) == len(got), got
    by_id = dict(zip(ids.tolist(), np.asarray(scores, np.float64).tolist(), strict=True))
    want = np.sort(np.asarray(scores, np.float64))[::-1][: len(got)]
    have = np.array([by_id[i] for i in got])
    off = np.flatnonzero(np.abs(have - want) > tol)
    assert off.size == 0, f"rank {off[0]}: got id {got[off[0]]} (score {have[off[0]]:.7f}), want {want[off[0]]:.7f}"


def rank_bounds(sim: np.ndarray, relevant: Sequence[set[int]], tol: float = FLOAT_TIE) -> tuple[np.ndarray, np.ndarray]:
    """(best, worst) 0-based rank of each query's first relevant candidate over every ordering of
    ``sim`` [queries, candidates] consistent with scores known to ``tol``: at least the number of
    irrelevant candidates above the best relevant score by more than ``tol``, at most the number
    above it minus ``tol``."""
    lo_rank, hi_rank = np.zeros(len(relevant)), np.zeros(len(relevant))
    for q, rel in enumerate(relevant):
        best = max(sim[q, sorted(rel)])
        others = np.delete(sim[q], sorted(rel))
        lo_rank[q] = np.sum(others > best + tol)
        hi_rank[q] = np.sum(others >= best - tol)
    return lo_rank, hi_rank


def recall_bounds(
    sim: np.ndarray, relevant: Sequence[set[int]], ks: Sequence[int] = (1, 5, 10), tol: float = FLOAT_TIE
) -> tuple[dict[int, float], dict[int, float]]:
    """(lowest, highest) R@K any float-tie-consistent ordering of ``sim`` gives (see rank_bounds).
    Equal bounds: that R@K does not depend on how kernels break ties."""
    lo_rank, hi_rank = rank_bounds(sim, relevant, tol)
    low = {k: float(100.0 * np.mean(hi_rank < k)) for k in ks}
    high = {k: float(100.0 * np.mean(lo_rank < k)) for k in ks}
    return low, high


def brute_force_topk(
    query: np.ndarray, embeddings: np.ndarray, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact max-sim top-k: query [d] or [nq, d]; embeddings [n, d] or [n, v, d]."""
    q = query.reshape(-1, query.shape[-1]).astype(np.float64)
    e = embeddings.reshape(len(embeddings), -1, embeddings.shape[-1]).astype(np.float64)
    scores = np.einsum("qd,nvd->nqv", q, e).reshape(len(e), -1).max(axis=1)
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]


def synthetic_rows(start: int, stop: int) -> dict[str, list]:
    """Record columns for ids start..stop-1 of a vector-only collection (``append_aligned``)."""
    n = stop - start
    return {
        "uri": [f"mem://{i}" for i in range(start, stop)],
        "sha256": [f"{i:064x}" for i in range(start, stop)],
        "width": [1] * n,
        "height": [1] * n,
        "bytes": [1] * n,
    }


_CLI_PROBE = """
import json, runpy, sys
sys.argv = ["blipsearch", *json.loads(sys.argv[1])]
try:
    runpy.run_module("cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("\\n@@" + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def probe_cli(args: Sequence[str], env: dict[str, str], timeout: float = 600) -> tuple[int, set[str], str, str]:
    """Run the CLI with ``args`` in a fresh interpreter with exactly ``env``: (exit code, every
    module it imported, stdout before the probe's line, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-c", _CLI_PROBE, json.dumps(list(args))],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    out, _, tail = proc.stdout.rpartition("\n@@")
    assert tail, proc.stderr
    info = json.loads(tail)
    return int(info["code"] or 0), set(info["modules"]), out, proc.stderr
