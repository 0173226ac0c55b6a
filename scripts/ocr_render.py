"""Labelled text images for OCR tests and scripts/bench/ocr.py, rendered with Debian's fonts.

``render`` draws one text on a plain or photo-like textured background at a given pixel size,
rotation, blur and JPEG quality, and returns the image with the text's box (where the glyphs'
pixels are). Fonts: DejaVu (``fonts-dejavu-core``) for Latin, Noto CJK (``fonts-noto-cjk``) or
WenQuanYi Zen Hei (``fonts-wqy-zenhei``) for Chinese; scripts/ensure_fonts.sh installs them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

LATIN_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
)
CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
)


def font_path(cjk: bool) -> str | None:
    return next((p for p in (CJK_FONTS if cjk else LATIN_FONTS) if Path(p).exists()), None)


def has_fonts() -> bool:
    return font_path(False) is not None and font_path(True) is not None


@dataclass
class Rendered:
    image: Image.Image
    text: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the glyph pixels


def texture(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A photo-like background: smooth colour blobs, a gradient and fine grain (uint8 RGB)."""
    small = rng.uniform(40, 220, size=(max(2, height // 48), max(2, width // 48), 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    grad = np.linspace(-30, 30, width, dtype=np.float32)[None, :, None]
    grain = rng.normal(0, 6, size=(height, width, 1)).astype(np.float32)
    return np.clip(base + grad + grain, 0, 255).astype(np.uint8)


def render(
    text: str,
    *,
    size_px: int = 32,
    cjk: bool = False,
    rotation: float = 0.0,
    blur: float = 0.0,
    jpeg_quality: int | None = None,
    textured: bool = False,
    canvas: tuple[int, int] | None = None,
    seed: int = 0,
) -> Rendered:
    rng = np.random.default_rng(seed)
    path = font_path(cjk)
    if path is None:
        raise FileNotFoundError("no font for " + ("Chinese" if cjk else "Latin") + " text: run scripts/ensure_fonts.sh")
    font = ImageFont.truetype(path, size_px)
    x0, y0, x1, y1 = font.getbbox(text)
    tw, th = x1 - x0, y1 - y0
    w, h = canvas or (max(320, tw + 2 * size_px + 40), max(240, th + 4 * size_px))
    if textured:
        bg = Image.fromarray(texture(w, h, rng))
        colour = (250, 250, 250) if rng.random() < 0.5 else (10, 10, 10)
    else:
        light = int(rng.integers(200, 250))
        bg = Image.new("RGB", (w, h), (light, light - 5, light - 15))
        colour = (int(rng.integers(0, 60)),) * 3
    layer = Image.new("L", (w, h), 0)
    px = int(rng.integers(size_px // 2, max(size_px // 2 + 1, w - tw - size_px // 2)))
    py = int(rng.integers(size_px, max(size_px + 1, h - th - size_px)))
    ImageDraw.Draw(layer).text((px - x0, py - y0), text, font=font, fill=255)
    if rotation:
        layer = layer.rotate(rotation, resample=Image.Resampling.BICUBIC, center=(px + tw / 2, py + th / 2))
    if textured:  # a dark or light plate behind the text, as on signs and captions
        plate = layer.filter(ImageFilter.MaxFilter(max(3, (size_px // 6) | 1)))
        bg.paste((128 - colour[0] // 2,) * 3, mask=plate.point(lambda v: 140 if v else 0))
    img = bg.copy()
    img.paste(Image.new("RGB", (w, h), colour), mask=layer)
    bbox = layer.point(lambda v: 255 if v > 64 else 0).getbbox() or (px, py, px + tw, py + th)
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    if jpeg_quality is not None:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=jpeg_quality)
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return Rendered(img, text, bbox)


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
