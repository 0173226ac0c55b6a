#!/usr/bin/env python
"""Write N seeded demo images (coloured shapes on gradients) to a folder: make_demo_images.py DIR N."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blipsearch.synthetic import write_images

if __name__ == "__main__":
    out, n = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 64
    write_images(out, n)
    print(f"wrote {n} images to {out}")
