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
from blipsearch.limits import MAX_IMAGE_PIXELS
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
    moderator: Moderator, labels_csv: Path, *, target_precision: float = 0.9, max_pixels: int = MAX_IMAGE_PIXELS
) -> dict[str, Any]:
    pol = moderator.policy
    kind_targets = _kind_targets(pol)
    names = {c.name for c in pol.categories} | set(kind_targets)
    rows = read_labels(Path(labels_csv), names)
    paths = sorted({p for p, _, _ in rows})
    scores: dict[str, dict[str, tuple[float, float]]] = {}
    kind_scores: dict[str, dict[str, float]] = {}
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
            kind_scores[p] = {name: score(res) for name, (_, score, _) in kind_targets.items()}
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
    for name, (kind, _, current) in kind_targets.items():
        labelled = [(kind_scores[p][name], lab) for p, c, lab in rows if c == name and p in kind_scores]
        report["categories"][name] = _kind_report(kind, current, labelled, target_precision)
    return report


def _kind_targets(pol: Any) -> dict[str, tuple[str, Any, Any]]:
    """Label categories of the record-level kinds: name -> (kind, score of a result, current setting).
    Detector categories score the best box of their classes; a hash list's name scores the
    Hamming distance of the nearest list hash (lower is closer); a text rule's name is 1 when it fired."""
    out: dict[str, tuple[str, Any, Any]] = {}
    for rule in pol.detectors:
        for cat in sorted(set(rule.classes.values())):
            classes = {k for k, v in rule.classes.items() if v == cat}

            def det(res: Any, classes: set[str] = classes, name: str = rule.detector) -> float:
                found = res.checks.get("detectors", {}).get(name, {}).get("detections", [])
                return max((d["score"] for d in found if d["class"] in classes), default=0.0)

            out[cat] = ("detector", det, {"threshold": rule.threshold, "rule": rule.name})
    for hl in pol.hash_lists:

        def dist(res: Any, name: str = hl.name) -> float:
            lists = res.checks.get("hash_lists", {}).get("lists", [])
            return float(next((e.get("distance", 256) for e in lists if e["list"] == name), 256))

        out[hl.name] = ("hash_list", dist, {"threshold": hl.threshold})
    for tr in pol.text_rules:

        def fired(res: Any, name: str = tr.name) -> float:
            return float(any(t.get("check") == "text_rule" and t.get("rule") == name for t in res.triggers))

        out[tr.name] = ("text_rule", fired, {"action": tr.action})
    return out


def _kind_report(kind: str, current: Any, mine: list[tuple[float, bool]], target: float) -> dict[str, Any]:
    if not mine:
        return {"kind": kind, "n": 0, "note": "no labelled images"}
    values = np.array([v for v, _ in mine], dtype=np.float64)
    labels = np.array([lab for _, lab in mine], dtype=bool)
    out: dict[str, Any] = {"kind": kind, "n": len(mine), "positives": int(labels.sum()), "current": current}
    if kind == "text_rule":  # a rule fires or not: its precision and recall
        out["at_current"] = dict(zip(("precision", "recall"), pr_at(values, labels, 0.5), strict=True))
        return out
    if kind == "hash_list":  # a match is distance <= t: score -distance, so that >= applies
        grid = list(range(0, 129, 8))
        out["curve"] = [
            dict(zip(("threshold", "precision", "recall"), (t, *pr_at(-values, labels, -t)), strict=True)) for t in grid
        ]
        ok = [t for t in sorted(set(grid) | set(values.astype(int).tolist()))
              if (pr := pr_at(-values, labels, -t)[0]) is not None and pr >= target]  # fmt: skip
        best = int(max(ok)) if ok else None  # the loosest threshold still at the target precision
        out["suggested_threshold"] = best
        out["at_suggested"] = (
            None if best is None else dict(zip(("precision", "recall"), pr_at(-values, labels, -best), strict=True))
        )
        return out
    out["curve"] = [dict(zip(("threshold", "precision", "recall"), (t, *pr_at(values, labels, t)), strict=True))
                    for t in GRID]  # fmt: skip
    ok = [t for t in sorted(set(values.tolist()) | set(GRID))
          if (pr := pr_at(values, labels, t)[0]) is not None and pr >= target and t > 0]  # fmt: skip
    lowest = float(min(ok)) if ok else None
    out["suggested_threshold"] = lowest
    out["at_suggested"] = (
        None if lowest is None else dict(zip(("precision", "recall"), pr_at(values, labels, lowest), strict=True))
    )
    return out
