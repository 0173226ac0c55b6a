"""Which model embeds a ``/v1/embed`` or ``blipsearch embed`` request, and the answer's shape."""

from __future__ import annotations

from collections.abc import Collection as Names
from pathlib import Path
from typing import Any

import numpy as np

from blipsearch.errors import ForbiddenError, InvalidInputError
from models.base import Embedder
from storage.collection import Collection


def resolve_model(
    data_dir: Path, default_model: str, collection: str | None, model: str | None, allowed: Names[str] | None = None
) -> str:
    """The collection's model, else ``model``, else the default. ``allowed`` (the API's list)
    restricts an explicitly named model; a collection's own model is always allowed."""
    if collection:
        own = Collection.open(data_dir, collection).manifest.model_id
        if model and model != own:
            raise InvalidInputError(
                f"Collection {collection!r} uses model {own!r}, not {model!r}: give one or the other."
            )
        return own
    chosen = model or default_model
    if allowed is not None and chosen not in allowed:
        raise ForbiddenError(
            f"Model {chosen!r} is not allowed here: use {default_model!r} or add it to BLIPSEARCH_ALLOWED_MODELS."
        )
    return chosen


def check_count(n: int, max_items: int) -> None:
    if n == 0:
        raise InvalidInputError("Nothing to embed: send texts or image files.")
    if n > max_items:
        raise InvalidInputError(f"{n} items is over the limit of {max_items} per request.")


def check_texts(texts: list[str], max_items: int) -> None:
    check_count(len(texts), max_items)
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise InvalidInputError(f"Text {i} is empty.")


def payload(embedder: Embedder, vectors: np.ndarray, kind: str) -> dict[str, Any]:
    """``{"model", "dim", "vectors_per_item", "embeddings"}``: L2-normalised float32, input order;
    BLIP-2 images give ``vectors_per_image`` (32) vectors each."""
    per_item = embedder.vectors_per_image if kind == "image" else 1
    arr = np.asarray(vectors, dtype=np.float32)
    return {
        "model": embedder.model_id,
        "dim": embedder.dim,
        "vectors_per_item": per_item,
        "embeddings": arr.tolist(),
    }
