"""Threshold calibration from labelled images: ``path,category,label`` rows.

Every labelled image gets every category's ITC and ITM score (no pre-screen). For each
category the report gives precision and recall of ``itm >= t`` over a grid of thresholds,
the smallest ITM threshold whose precision reaches the target (the most recall at that
precision), and an ITC pre-threshold (on the screen score, (1 + cosine) / 2) that keeps every
labelled positive (the screen must
not drop what ITM would confirm).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from blipsearch.errors import ImageDecodeError, InvalidInputError
from media.decode import decode_image, read_file
from moderation.checks import Moderator, screen_score

TRUE = {"1", "true", "yes", "y", "positive"}
FALSE = {"0", "false", "no", "n", "negative"}
GRID = [round(x, 2) for x in np.arange(0.0, 1.0001, 0.05)]


def read_labels(path: Path, categories: set[str]) -> list[tuple[str, str, bool]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InvalidInputError(f"Cannot read labels {path}: {exc.strerror or exc}") from None
    if not rows or not {"path", "category", "label"} <= set(rows[0]):
        raise InvalidInputError(f"{path} needs a header with columns path,category,label.")
    out = []
    for n, row in enumerate(rows, start=2):
        label = (row["label"] or "").strip().lower()
        if label not in TRUE | FALSE:
            raise InvalidInputError(f"{path}:{n}: label {row['label']!r} is not 1/0, true/false or yes/no.")
        if row["category"] not in categories:
            raise InvalidInputError(f"{path}:{n}: category {row['category']!r} is not in the policy.")
        p = Path(row["path"])
        out.append((str(p if p.is_absolute() else path.parent / p), row["category"], label in TRUE))
    return out


def pr_at(scores: np.ndarray, labels: np.ndarray, t: float) -> tuple[float | None, float | None]:
    pred = scores >= t
    tp = int((pred & labels).sum())
    precision = tp / int(pred.sum()) if pred.any() else None
    recall = tp / int(labels.sum()) if labels.any() else None
    return precision, recall


def calibrate(
    moderator: Moderator, labels_csv: Path, *, target_precision: float = 0.9, max_pixels: int = 100_000_000
) -> dict[str, Any]:
    names = {c.name for c in moderator.policy.categories}
    rows = read_labels(Path(labels_csv), names)
    paths = sorted({p for p, _, _ in rows})
    scores: dict[str, dict[str, tuple[float, float]]] = {}
    failures = []
    for start in range(0, len(paths), 16):
        chunk, images = [], []
        for p in paths[start : start + 16]:
            try:
                images.append(decode_image(read_file(Path(p), 1 << 30).data, max_pixels).image)
                chunk.append(p)
            except ImageDecodeError as exc:
                failures.append({"path": p, "error": str(exc)})
        for p, res in zip(chunk, moderator.check_images(images, screen=False), strict=True):
            scores[p] = {c.name: (c.itc, c.itm or 0.0) for c in res.categories}
    report: dict[str, Any] = {"target_precision": target_precision, "categories": {}, "failures": failures}
    for cat in moderator.policy.categories:
        mine = [(scores[p][cat.name], lab) for p, c, lab in rows if c == cat.name and p in scores]
        if not mine:
            report["categories"][cat.name] = {"n": 0, "note": "no labelled images"}
            continue
        itc = np.array([s[0] for s, _ in mine])
        itm = np.array([s[1] for s, _ in mine])
        labels = np.array([lab for _, lab in mine], dtype=bool)
        curve = [
            dict(zip(("threshold", "precision", "recall"), (t, *pr_at(itm, labels, t)), strict=True)) for t in GRID
        ]
        candidates = sorted(set(itm.tolist()) | set(GRID))
        ok = [t for t in candidates if (pr := pr_at(itm, labels, t)[0]) is not None and pr >= target_precision]
        best = float(min(ok)) if ok else None
        report["categories"][cat.name] = {
            "n": len(mine),
            "positives": int(labels.sum()),
            "current": {"itc_threshold": cat.itc_threshold, "itm_threshold": cat.itm_threshold},
            "curve": curve,
            "suggested_itm_threshold": best,
            "at_suggested": None
            if best is None
            else dict(zip(("precision", "recall"), pr_at(itm, labels, best), strict=True)),
            "suggested_itc_threshold": float(np.floor(screen_score(itc[labels].min()) * 100) / 100)
            if labels.any()
            else None,
        }
    return report
