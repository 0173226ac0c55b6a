"""Detector rules: a detector (models/detectors/) runs once per image for all the rules that name
it; a rule is hit by a box of one of its classes scoring at least its threshold. Every box the
detector returned is kept in the evidence (class, score, box, and the category it maps to), so
a reviewer sees what was found; hits carry the image size so the page can draw the box."""

from __future__ import annotations

from typing import Any

from models.detectors import Detector, load_detector
from moderation.kinds.base import CheckKind, KindResult, Subject
from moderation.policy import DetectorRule


class DetectorsCheck(CheckKind):
    name = "detectors"
    check_name = "detector"

    def __init__(self, rules: list[DetectorRule], detectors: dict[str, Detector] | None = None) -> None:
        self.rules = rules
        self.detectors: dict[tuple[str, str | None], Detector] = {}
        for r in rules:
            key = (r.detector, r.model)
            if key not in self.detectors:
                given = (detectors or {}).get(r.detector) if r.model is None else None
                self.detectors[key] = given or load_detector(r.detector, r.model)
            unknown = set(r.classes) - set(self.detectors[key].labels)
            if unknown:
                from moderation.policy import PolicyError

                raise PolicyError(
                    f"detectors[{rules.index(r)}].classes: {sorted(unknown)} are not classes of {r.detector} "
                    f"({', '.join(self.detectors[key].labels)})"
                )

    @property
    def model_ids(self) -> dict[str, str]:
        return {f"detector:{name}": d.model_id for (name, _), d in self.detectors.items()}

    def check(self, subjects: list[Subject]) -> list[KindResult]:
        out = [KindResult(evidence={}) for _ in subjects]
        images = [(i, s.image) for i, s in enumerate(subjects) if s.image is not None]
        for i, s in enumerate(subjects):
            if s.image is None:
                out[i] = self.failed("no image to run the detector on")
        for (name, model), det in self.detectors.items():
            found = _detect(det, [im for _, im in images])
            mine = [r for r in self.rules if (r.detector, r.model) == (name, model)]
            for (i, im), dets in zip(images, found, strict=True):
                assert im is not None
                if isinstance(dets, Exception):
                    out[i] = self.failed(f"{name} failed on the image: {dets}", detector=name)
                    continue
                boxes: list[dict[str, Any]] = []
                for d in dets:
                    cats = {r.classes[d.label] for r in mine if d.label in r.classes}
                    boxes.append({**d.to_dict(), "categories": sorted(cats)})
                out[i].evidence[name] = {"model": det.model_id, "image_size": [im.width, im.height],
                                         "detections": boxes}  # fmt: skip
                for r in mine:
                    for d in dets:
                        if d.label in r.classes and d.score >= r.threshold:
                            out[i].triggers.append({
                                "check": self.check_name, "rule": r.name, "detector": name, "class": d.label,
                                "category": r.classes[d.label], "score": d.score, "threshold": r.threshold,
                                "box": list(d.box), "image_size": [im.width, im.height], "action": r.action,
                            })  # fmt: skip
        return out


def _detect(det: Detector, images: list[Any]) -> list[list[Any] | Exception]:
    """Detections per image; an image the detector fails on gets its exception (the others still run)."""
    try:
        return list(det.detect(images))
    except Exception:  # noqa: BLE001 - retried one image at a time to find the one that fails
        out: list[list[Any] | Exception] = []
        for im in images:
            try:
                out.append(det.detect([im])[0])
            except Exception as exc:  # noqa: BLE001 - that image's failure is its result
                out.append(exc)
        return out
