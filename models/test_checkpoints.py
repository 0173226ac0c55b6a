"""The mark of a randomly initialised test checkpoint (scripts/make_test_models.py writes them).

Such a model embeds and captions without meaning: scores near zero or negative, gibberish
captions. The page warns when a collection was built with one, so a first run does not look
broken. The mark is a small JSON file beside the checkpoint's ``config.json``; reading it needs
no model library.
"""

from __future__ import annotations

import json
from pathlib import Path

MARKER = "blipsearch-random-model.json"


def mark_random(folder: Path, made_by: str = "scripts/make_test_models.py") -> None:
    """Mark the checkpoint in ``folder`` as randomly initialised."""
    note = {"random_init": True, "made_by": made_by, "meaning": "scores and captions are meaningless"}
    (Path(folder) / MARKER).write_text(json.dumps(note, indent=1) + "\n", encoding="utf-8")


def is_random_model(model_id: str | None) -> bool:
    """True when ``model_id`` is a local checkpoint folder marked by ``mark_random``."""
    if not model_id or "://" in model_id:
        return False
    try:
        return (Path(model_id).expanduser() / MARKER).is_file()
    except (OSError, ValueError):  # a hub id that is not a path on this system
        return False
