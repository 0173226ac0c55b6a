"""Seeded synthetic images: coloured shapes on gradients, varied sizes.

Used by the demo (scripts/run.sh --demo), the benchmarks and the tests, so that every run
sees the same structured (not uniform-noise) data.
"""

from __future__ import annotations

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
