"""OpenCLIP's checkpoint layout, read without torch or open_clip (``blipsearch models`` and the
family registry use it; models/openclip.py loads the model): ``open_clip_config.json`` with a
``model_cfg`` (and ``preprocess_cfg``), beside ``open_clip_model.safetensors`` or
``open_clip_pytorch_model.bin``; ``hf-hub:org/repo`` names such a repository."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from blipsearch.errors import ModelLoadError

CONFIG = "open_clip_config.json"
WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # preferred first
HUB_PREFIX = "hf-hub:"
MAX_CONFIG_BYTES = 1 << 20
# Text towers that read many languages: XLM-RoBERTa / mT5 / NLLB towers, SigLIP i18n (250k vocabulary).
_MULTILINGUAL_TOWERS = re.compile(r"xlm-roberta|mt5|nllb|multilingual|i18n", re.IGNORECASE)
_HUB_FILES = [CONFIG, *WEIGHTS, "tokenizer*", "vocab*", "merges*", "special_tokens_map.json", "*.model", "*.txt"]


def is_openclip_source(source: str) -> bool:
    """An ``hf-hub:`` name, or a local directory with OpenCLIP's config and no transformers config."""
    if source.startswith(HUB_PREFIX):
        return True
    root = Path(source).expanduser()
    return root.is_dir() and (root / CONFIG).is_file() and not (root / "config.json").is_file()


def local_dir(source: str) -> Path:
    """The checkpoint's directory: ``source`` itself, or the hub repository's files in the local cache."""
    if not source.startswith(HUB_PREFIX):
        return Path(source).expanduser().resolve()
    repo = source[len(HUB_PREFIX) :]
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, allow_patterns=_HUB_FILES))
    except Exception as exc:
        raise ModelLoadError(
            f"Could not fetch the OpenCLIP checkpoint {source!r} ({type(exc).__name__}: {exc}). Download it "
            "(huggingface-cli download) and pass its directory, or unset HF_HUB_OFFLINE."
        ) from exc


def read_config(root: Path) -> dict[str, Any]:
    path = root / CONFIG
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelLoadError(f"{path} is over {MAX_CONFIG_BYTES} bytes: not an OpenCLIP config.")
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Could not read the OpenCLIP config {path}: {exc}") from exc
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"), dict):
        raise ModelLoadError(f"{path} has no 'model_cfg' object: not an OpenCLIP checkpoint config.")
    return cfg


def weights_file(root: Path) -> Path:
    for name in WEIGHTS:
        if (root / name).is_file():
            return root / name
    raise ModelLoadError(
        f"{root} has an OpenCLIP config but no weights: expected {' or '.join(WEIGHTS)} "
        "(other formats are not loaded: only safetensors, or a .bin read with weights_only)."
    )


def is_multilingual(model_cfg: dict[str, Any]) -> bool:
    text = model_cfg.get("text_cfg") or {}
    names = f"{text.get('hf_model_name', '')} {text.get('hf_tokenizer_name', '')}"
    return bool(_MULTILINGUAL_TOWERS.search(names)) or int(text.get("vocab_size") or 0) >= 250_000


def describe_config(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """What ``blipsearch models --model`` reports for an OpenCLIP checkpoint (config only)."""
    return {"dim": int(model_cfg["embed_dim"]), "multilingual": is_multilingual(model_cfg)}
