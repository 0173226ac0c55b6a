"""Seeded, structured test images (shapes and gradients, varied sizes) and brute-force oracles."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from blipsearch.synthetic import make_image, write_images

__all__ = ["brute_force_topk", "make_image", "write_bad_files", "write_images"]


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


def brute_force_topk(
    query: np.ndarray, embeddings: np.ndarray, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact max-sim top-k: query [d] or [nq, d]; embeddings [n, d] or [n, v, d]."""
    q = query.reshape(-1, query.shape[-1]).astype(np.float64)
    e = embeddings.reshape(len(embeddings), -1, embeddings.shape[-1]).astype(np.float64)
    scores = np.einsum("qd,nvd->nqv", q, e).reshape(len(e), -1).max(axis=1)
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]
