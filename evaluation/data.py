"""Labelled retrieval data: Karpathy-split JSON, BLIP / LAVIS annotation lists, or JSONL of {image, captions[]}."""

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


def _captions(value: object, where: str) -> list[str]:
    """A caption field: one string or a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(c, str) for c in value):
        return list(value)
    raise InvalidInputError(f"{where}: captions must be a string or a non-empty list of strings")


def _in_split(rec: dict, split: str | None) -> bool:
    return not split or rec.get("split", split) == split


def _karpathy(doc: dict, images_dir: Path, split: str | None) -> list[tuple[Path, list[str]]]:
    """Karpathy's ``dataset_*.json``: ``images[].filename``, ``.filepath``, ``.sentences[].raw``, ``.split``."""
    items = []
    for rec in doc["images"]:
        if not _in_split(rec, split):
            continue
        sub = images_dir / rec.get("filepath", "") / rec["filename"]
        img = sub if sub.exists() else images_dir / rec["filename"]
        items.append((img, [s["raw"] for s in rec["sentences"]]))
    return items


def _blip_list(doc: list, path: Path, images_dir: Path, split: str | None) -> list[tuple[Path, list[str]]]:
    """BLIP / LAVIS annotation lists (``coco_karpathy_test.json``, ``flickr30k_test.json``, ...):
    ``[{"image": ..., "caption": str | [str], "image_id"?: ...}]``. Entries naming the same image
    (training-style files: one caption per entry) are merged, in first-appearance order."""
    by_image: dict[str, list[str]] = {}
    for n, rec in enumerate(doc):
        if not isinstance(rec, dict) or not isinstance(rec.get("image"), str):
            raise InvalidInputError(f"{path}: entry {n} is not an object with an 'image' path")
        if not _in_split(rec, split):
            continue
        caps = rec.get("caption", rec.get("captions"))
        by_image.setdefault(rec["image"], []).extend(_captions(caps, f"{path}: entry {n}"))
    return [(images_dir / image, caps) for image, caps in by_image.items()]


def _jsonl(raw: str, path: Path, images_dir: Path, split: str | None) -> list[tuple[Path, list[str]]]:
    """JSON lines of ``{"image": ..., "captions": [...], "split"?: ...}`` (``caption`` also accepted)."""
    items = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        if not isinstance(rec, dict) or not isinstance(rec.get("image"), str):
            raise InvalidInputError(f"{path}:{n}: not an object with an 'image' path")
        if not _in_split(rec, split):
            continue
        items.append((images_dir / rec["image"], _captions(rec.get("captions", rec.get("caption")), f"{path}:{n}")))
    return items


def detect_format(raw: str) -> str:
    """``karpathy``, ``blip`` (a JSON list) or ``jsonl``, from the content (never the file name)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return "jsonl"  # several JSON documents, one a line (or not JSON at all: the reader says so)
    if isinstance(doc, list):
        return "blip"
    if isinstance(doc, dict) and "images" in doc:
        return "karpathy"
    return "jsonl"  # a one-line JSONL file is a single JSON object


def load_annotations(
    path: Path, images_dir: Path, split: str | None = "test", limit: int | None = None
) -> RetrievalSet:
    """Read ``path``, whatever its name: Karpathy's ``dataset_*.json``, a BLIP / LAVIS annotation
    list (``coco_karpathy_test.json``, ``flickr30k_test.json``) or JSONL of ``{image, captions}``.

    ``split`` filters records that carry a ``split`` field (Karpathy, JSONL); BLIP / LAVIS files
    are one split per file and have none, so every entry is read."""
    try:
        raw = path.read_text(encoding="utf-8-sig")  # a byte-order mark, if any, is not content
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"Cannot read annotations {path}: {exc}") from exc
    kind = detect_format(raw)
    try:
        if kind == "karpathy":
            items = _karpathy(json.loads(raw), images_dir, split)
        elif kind == "blip":
            items = _blip_list(json.loads(raw), path, images_dir, split)
        else:
            items = _jsonl(raw, path, images_dir, split)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{path}: not Karpathy JSON, a BLIP/LAVIS annotation list or {{image, captions}} JSONL ({exc!r})"
        ) from exc
    if limit:
        items = items[:limit]
    if not items:
        raise InvalidInputError(f"{path}: no images in split {split!r}")
    missing = [str(p) for p, _ in items if not p.is_file()]
    if missing:
        raise InvalidInputError(f"{len(missing)} annotated image(s) not found under {images_dir}, e.g. {missing[0]}")
    return _build(items)
