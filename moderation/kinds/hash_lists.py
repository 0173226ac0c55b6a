"""Known images by PDQ hash: the image's hash (and, per list, its 7 rotations and flips)
against each ``hash_lists`` entry, a match at Hamming distance <= the list's threshold.

The record's stored ``pdq_hash`` is used when there is one and no dihedral variants are asked
for; otherwise the image is hashed (media/pdq.py). Images whose PDQ quality is under a list's
``min_quality`` are not matched against it (flat images collide by accident); the evidence says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from media.pdq import DIHEDRAL, pdq_dihedral, pdq_hash
from moderation.hashlists import HashList
from moderation.kinds.base import CheckKind, KindResult, Subject
from moderation.policy import HashListRule


class HashListsCheck(CheckKind):
    name = "hash_lists"
    check_name = "hash_list"

    def __init__(self, rules: list[HashListRule], base_dir: Path) -> None:
        self.rules = rules
        self.lists = [HashList(r.name, _resolve(base_dir, r.path), r.format, max_hashes=r.max_hashes) for r in rules]
        self.dihedral = any(r.dihedral for r in rules)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "lists": [hl.describe() for hl in self.lists]}

    def _hashes(self, s: Subject) -> tuple[list[str], int]:
        if not self.dihedral and s.pdq_hash is not None:
            return [s.pdq_hash], int(s.pdq_quality or 0)
        if s.image is None:
            raise ValueError("no image and no stored PDQ hash")
        if self.dihedral:
            return pdq_dihedral(s.image)
        h = pdq_hash(s.image)
        return [h.hex], h.quality

    def check(self, subjects: list[Subject]) -> list[KindResult]:
        out = []
        for s in subjects:
            try:
                hashes, quality = self._hashes(s)
            except Exception as exc:  # noqa: BLE001 - one image's failure is that item's result
                out.append(self.failed(f"PDQ hashing failed: {exc}"))
                continue
            queries = np.frombuffer(b"".join(bytes.fromhex(h) for h in hashes), np.uint8).reshape(-1, 32)
            res = KindResult(evidence={"pdq_hash": hashes[0], "quality": quality, "lists": []})
            for rule, hl in zip(self.rules, self.lists, strict=True):
                entry: dict[str, Any] = {"list": rule.name, "threshold": rule.threshold, "hashes": len(hl)}
                if quality < rule.min_quality:
                    entry.update(matched=False, skipped=f"quality {quality} < min_quality {rule.min_quality}")
                    res.evidence["lists"].append(entry)
                    continue
                best = hl.nearest(queries if rule.dihedral else queries[:1])
                matched = best is not None and best.distance <= rule.threshold
                if best is not None:
                    entry.update(hash=best.hash, distance=best.distance, variant=DIHEDRAL[best.query])
                entry["matched"] = matched
                res.evidence["lists"].append(entry)
                if matched:
                    res.triggers.append({"check": self.check_name, "list": rule.name, "hash": entry["hash"],
                                         "query_hash": hashes[best.query] if best else None,
                                         "distance": entry["distance"], "variant": entry["variant"],
                                         "threshold": rule.threshold, "action": rule.action})  # fmt: skip
            out.append(res)
        return out


def _resolve(base: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p
