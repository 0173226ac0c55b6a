"""A cheap text-presence score, run before the detector so images without text skip it.

Text is a dense run of thin strokes: in a small window it has many strong intensity steps in
both directions. The score is the fraction of 16x16 cells (of the grey image, its long side
scaled to at most ``side`` pixels, 2x2 box-averaged) whose share of pixels with a strong
horizontal step (|Δ| over ``lag`` pixels > ``step``/255) and a strong vertical step lies in the
band typical of glyph strokes. Smooth photos, skies, flat screenshots and grainy textures score 0;
text scores well above the default threshold.

The price is recall: text below about 8 pixels high after the scaling, heavily blurred, or of
very low contrast (step under ``step``), scores 0 and is never read. A first version (1-pixel
steps over 40/255) lost every image blurred with σ = 2 px that OCR reads fine.
scripts/bench/ocr.py measures what the gate skips (images gated out and words lost) on its
rendered set; ``BLIPSEARCH_OCR_GATE=0`` turns it off.
"""

from __future__ import annotations

import numpy as np

CELL = 16


def text_presence(rgb: np.ndarray, side: int = 1024, step: int = 16, lag: int = 2) -> float:
    """Score in [0, 1]: the fraction of cells that look like glyph strokes."""
    h, w = rgb.shape[:2]
    k = max(1, int(np.ceil(max(h, w) / side)))
    grey = rgb[::k, ::k].astype(np.float32).mean(axis=2)
    if min(grey.shape) < lag + 2:
        return 0.0
    # a 2x2 box average damps sensor grain; steps over ``lag`` pixels still catch blurred edges
    grey = (grey[:-1, :-1] + grey[1:, :-1] + grey[:-1, 1:] + grey[1:, 1:]) / 4
    gx = np.abs(grey[:, lag:] - grey[:, :-lag]) > step
    gy = np.abs(grey[lag:, :] - grey[:-lag, :]) > step
    hh = min(gx.shape[0], gy.shape[0]) // CELL * CELL
    ww = min(gx.shape[1], gy.shape[1]) // CELL * CELL
    if hh == 0 or ww == 0:
        return 0.0

    def density(g: np.ndarray) -> np.ndarray:
        cells = g[:hh, :ww].reshape(hh // CELL, CELL, ww // CELL, CELL)
        return cells.mean(axis=(1, 3))

    dx, dy = density(gx), density(gy)
    stroke = (dx > 0.04) & (dy > 0.02) & (dx < 0.6)
    return float(stroke.mean())
