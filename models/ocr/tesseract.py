"""Tesseract (Debian's ``tesseract-ocr`` with its trained data), through its command line.

Line-level results come from Tesseract's TSV output (``tesseract IMAGE - tsv``): words are
grouped by (block, paragraph, line), a line's box is the union of its words' boxes and its
confidence the mean of theirs (Tesseract reports 0-100). The CLI runs under the per-image time
budget as a subprocess timeout, so a hostile image cannot hold a worker.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from blipsearch.errors import ConfigError
from models.ocr.base import Deadline, OcrBudgetExceeded, OcrEngine, OcrLimits, OcrLine, downscale


class TesseractEngine(OcrEngine):
    family = "tesseract"

    def __init__(self, languages: str = "eng", threads: int = 1) -> None:
        exe = shutil.which("tesseract")
        if exe is None:
            raise ConfigError(
                "The Tesseract OCR engine needs the tesseract command (Debian: apt-get install tesseract-ocr); "
                "or use --ocr-engine rapidocr."
            )
        self.exe = exe
        self.languages = languages
        self.threads = max(1, threads)
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, check=False)
        first = (out.stdout or out.stderr).splitlines()
        self._version = first[0].split()[-1] if first else "unknown"

    @property
    def name(self) -> str:
        return f"tesseract {self._version} {self.languages}"

    def _read(self, rgb: np.ndarray, limits: OcrLimits, deadline: Deadline) -> tuple[list[OcrLine], str | None]:
        from PIL import Image

        small, scale = downscale(rgb, limits.max_pixels)
        with tempfile.TemporaryDirectory(prefix="blipsearch-ocr-") as tmp:
            path = Path(tmp) / "in.png"
            Image.fromarray(small).save(path)
            left = max(0.1, deadline.end - time.monotonic())
            try:
                out = subprocess.run(
                    [self.exe, str(path), "-", "-l", self.languages, "tsv"],
                    capture_output=True,
                    text=True,
                    timeout=left,
                    check=False,
                    env={"OMP_THREAD_LIMIT": str(self.threads), "PATH": "/usr/bin:/bin"},
                )
            except subprocess.TimeoutExpired:
                raise OcrBudgetExceeded(f"ocr_timeout: over the {limits.time_budget_s:g} s budget") from None
        if out.returncode != 0:
            raise RuntimeError(f"tesseract exited {out.returncode}: {out.stderr.strip()[:200]}")
        groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
        for row in csv.DictReader(io.StringIO(out.stdout), delimiter="\t", quoting=csv.QUOTE_NONE):
            if row.get("level") == "5" and (row.get("text") or "").strip() and float(row.get("conf") or -1) >= 0:
                groups.setdefault((row["block_num"], row["par_num"], row["line_num"]), []).append(row)
        lines: list[OcrLine] = []
        error = None
        for words in groups.values():
            if len(lines) >= limits.max_regions:
                error = f"ocr_too_many_regions: over {limits.max_regions} lines, read the first {limits.max_regions}"
                break
            x0 = min(int(w["left"]) for w in words) / scale
            y0 = min(int(w["top"]) for w in words) / scale
            x1 = max(int(w["left"]) + int(w["width"]) for w in words) / scale
            y1 = max(int(w["top"]) + int(w["height"]) for w in words) / scale
            if min(x1 - x0, y1 - y0) < limits.min_box_side:
                continue
            conf = sum(float(w["conf"]) for w in words) / len(words) / 100.0
            text = " ".join(w["text"].strip() for w in words)
            lines.append(OcrLine(text, [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], round(conf, 4)))
        return lines, error
