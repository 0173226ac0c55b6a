#!/usr/bin/env python
"""Write N seeded demo images (coloured shapes on gradients) to a folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path, help="Folder to write the images to (created if missing).")
    parser.add_argument("n", type=int, nargs="?", default=64, help="How many images (default 64).")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("n must be at least 1")
    from blipsearch.synthetic import write_images

    write_images(args.out_dir, args.n)
    print(f"wrote {args.n} images to {args.out_dir}")


if __name__ == "__main__":
    main()
