"""Seeded, structured test images (shapes and gradients, varied sizes) and brute-force oracles."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PALETTE = [(220, 40, 40), (40, 180, 60), (40, 80, 220), (240, 200, 30), (20, 20, 20), (250, 250, 250)]


def make_image(i: int, size: tuple[int, int] | None = None) -> Image.Image:
    rng = np.random.default_rng(1000 + i)
    w, h = size or (int(rng.integers(48, 160)), int(rng.integers(48, 160)))
    # Background: a gradient between two palette colours, plus a little noise.
    a = np.array(PALETTE[i % len(PALETTE)], np.float32)
    b = np.array(PALETTE[(i // len(PALETTE) + 1) % len(PALETTE)], np.float32)
    t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    arr = a * (1 - t) + b * t + rng.normal(0, 8, (h, w, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8).repeat(1, axis=0))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        x1, y1 = x0 + int(rng.integers(8, w // 2 + 8)), y0 + int(rng.integers(8, h // 2 + 8))
        color = PALETTE[int(rng.integers(0, len(PALETTE)))]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=color)
    return img


def write_images(folder: Path, n: int, start: int = 0, fmt: str = "JPEG") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
    paths = []
    for i in range(start, start + n):
        p = folder / f"img_{i:05d}.{ext}"
        make_image(i).save(p, fmt)
        paths.append(p)
    return paths


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


def brute_force_topk(query: np.ndarray, embeddings: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact max-sim top-k: query [d] or [nq, d]; embeddings [n, d] or [n, v, d]."""
    q = query.reshape(-1, query.shape[-1]).astype(np.float64)
    e = embeddings.reshape(len(embeddings), -1, embeddings.shape[-1]).astype(np.float64)
    scores = np.einsum("qd,nvd->nqv", q, e).reshape(len(e), -1).max(axis=1)
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]
