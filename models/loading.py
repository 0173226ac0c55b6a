"""``from_pretrained`` from a hub id or a local directory, with one actionable error."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from blipsearch.errors import ModelLoadError

log = logging.getLogger(__name__)


def _looks_like_path(source: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a filesystem path."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source


def resolve_source(source: str) -> str:
    """A local directory (validated) or a hub id, as given."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelLoadError(
                f"Model path {str(path)!r} is not a model directory (expected a folder with config.json, "
                "as written by save_pretrained or `huggingface-cli download --local-dir`)."
            )
        return str(path.resolve())
    if _looks_like_path(source):
        raise ModelLoadError(f"Model directory {str(path)!r} does not exist. {how_to_fix(source)}")
    return source


def _hub_offline() -> bool:
    """Whether the Hub client runs offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE), as it read it."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - installed with transformers
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def how_to_fix(source: str) -> str:
    return (
        "To run offline, download the checkpoint on a machine with access to the Hugging Face Hub "
        f"(`huggingface-cli download {source} --local-dir ./models/{source.split('/')[-1]}`), "
        "copy that folder here, and pass `--model ./models/<folder>` or set BLIPSEARCH_MODEL to it."
    )


def from_pretrained(cls: Any, source: str, what: str, **kwargs: Any) -> Any:
    """Call ``cls.from_pretrained`` and turn every way it can fail into a ModelLoadError."""
    resolved = resolve_source(source)
    try:
        return cls.from_pretrained(resolved, **kwargs)
    except ModelLoadError:
        raise
    except Exception as exc:
        offline = _hub_offline()
        if Path(resolved).is_dir():
            reason = f"the directory {resolved!r} does not hold a loadable {what}: {exc}"
            raise ModelLoadError(f"Could not load {what} from {resolved!r}: {reason}") from exc
        where = (
            "HF_HUB_OFFLINE is set and it is not in the local cache"
            if offline
            else ("it is not in the local cache and the Hugging Face Hub could not be reached (or has no such repo)")
        )
        raise ModelLoadError(
            f"Could not load {what} {source!r}: {where} ({type(exc).__name__}). {how_to_fix(source)}"
        ) from exc
