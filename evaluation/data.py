"""Labelled retrieval data: Karpathy-split JSON or a simple JSONL of {image, captions[]}."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from blipsearch.errors import InvalidInputError


@dataclass
class RetrievalSet:
    images: list[Path]
    texts: list[str]
    txt_to_img: list[int]  # the image index of each caption
    img_to_txts: list[set[int]]  # the caption indices of each image


def _build(items: list[tuple[Path, list[str]]]) -> RetrievalSet:
    images: list[Path] = []
    texts: list[str] = []
    txt_to_img: list[int] = []
    img_to_txts: list[set[int]] = []
    for i, (path, caps) in enumerate(items):
        images.append(path)
        ids = set()
        for c in caps:
            ids.add(len(texts))
            texts.append(c)
            txt_to_img.append(i)
        img_to_txts.append(ids)
    return RetrievalSet(images, texts, txt_to_img, img_to_txts)


def load_annotations(
    path: Path, images_dir: Path, split: str | None = "test", limit: int | None = None
) -> RetrievalSet:
    """Read ``path``: Karpathy JSON (``images[].filename``, ``.filepath``, ``.sentences[].raw``,
    ``.split``) or JSONL lines of ``{"image": ..., "captions": [...], "split"?: ...}``."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"Cannot read annotations {path}: {exc}") from exc
    items: list[tuple[Path, list[str]]] = []
    try:
        if path.suffix.lower() == ".json":
            for rec in json.loads(raw)["images"]:
                if split and rec.get("split", split) != split:
                    continue
                sub = images_dir / rec.get("filepath", "") / rec["filename"]
                img = sub if sub.exists() else images_dir / rec["filename"]
                items.append((img, [s["raw"] for s in rec["sentences"]]))
        else:
            for n, line in enumerate(raw.splitlines(), 1):
                if not line.strip():
                    continue
                rec = json.loads(line)
                if split and rec.get("split", split) != split:
                    continue
                caps = rec["captions"]
                if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                    raise InvalidInputError(f"{path}:{n}: 'captions' must be a list of strings")
                items.append((images_dir / rec["image"], caps))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"{path}: not Karpathy JSON or {{image, captions}} JSONL ({exc!r})") from exc
    if limit:
        items = items[:limit]
    if not items:
        raise InvalidInputError(f"{path}: no images in split {split!r}")
    missing = [str(p) for p, _ in items if not p.is_file()]
    if missing:
        raise InvalidInputError(f"{len(missing)} annotated image(s) not found under {images_dir}, e.g. {missing[0]}")
    return _build(items)
