"""The data dir's own settings file, ``DATA_DIR/blipsearch.toml``: what the data dir was set up
with (its model, caption model, ...), read by every command as defaults.

Precedence, highest first: a command-line flag, a ``BLIPSEARCH_*`` environment variable, this
file, the built-in default. Keys are the settings' names: the ``BLIPSEARCH_*`` variables without
the prefix, in lower case (``model``, ``caption_model``, ``device``, ...). A relative model path
(``./models/blip-itm``) is relative to the data dir, so the folder can move as a whole.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from blipsearch.errors import ConfigError

CONFIG_NAME = "blipsearch.toml"
DEFAULT_DATA_DIR = Path("./blipsearch-data")
# Settings whose value is a model directory or hub id: relative paths are taken from the data dir.
MODEL_KEYS = ("model", "caption_model")
# Not settable in the file: the file is found through it.
NOT_IN_FILE = ("data_dir",)
HEADER = (
    "# blipsearch settings of this data dir, read by every command (flag > BLIPSEARCH_* variable > this file\n"
    "# > built-in default). Keys: the BLIPSEARCH_* variables without the prefix, lower case. Edit with\n"
    "# `blipsearch config set KEY VALUE` / `blipsearch config unset KEY`; see `blipsearch config show`.\n"
)


def data_dir_from_env(explicit: Path | str | None = None) -> Path:
    """The data dir a command uses: ``explicit`` (``--data-dir``), else BLIPSEARCH_DATA_DIR, else the default."""
    if explicit is not None:
        return Path(explicit)
    for name, value in os.environ.items():
        if name.upper() == "BLIPSEARCH_DATA_DIR" and value:
            return Path(value)
    return DEFAULT_DATA_DIR


def config_path(data_dir: Path) -> Path:
    return Path(data_dir) / CONFIG_NAME


def _load_toml(text: str, path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.") from None


def read_config(data_dir: Path, known: Iterable[str]) -> dict[str, Any]:
    """The settings the data dir's file sets (empty without a file); unknown keys are refused."""
    path = config_path(data_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}.") from None
    values = _load_toml(text, path)
    check_keys(values, known, path)
    return {k: read_value(data_dir, k, v) for k, v in values.items()}


def check_keys(values: Mapping[str, Any], known: Iterable[str], path: Path | str) -> None:
    allowed = set(known) - set(NOT_IN_FILE)
    for key in values:
        if key in NOT_IN_FILE:
            raise ConfigError(f"{path}: {key!r} cannot be set in the data dir's own file.")
        if key not in allowed:
            raise ConfigError(
                f"{path}: {key!r} is not a setting; keys are the BLIPSEARCH_* variables without the prefix, in "
                f"lower case (e.g. {', '.join(MODEL_KEYS)}, device, batch_size)."
            )


def read_value(data_dir: Path, key: str, value: Any) -> Any:
    """A value as read from the file: relative model paths are taken from the data dir."""
    if key in MODEL_KEYS and isinstance(value, str) and value.startswith(("./", "../")):
        return str((Path(data_dir) / value).resolve())
    return value


def set_in_env(key: str) -> bool:
    """Whether ``BLIPSEARCH_<KEY>`` is set (pydantic-settings matches variable names case-insensitively)."""
    want = f"BLIPSEARCH_{key}".upper()
    return any(name.upper() == want for name in os.environ)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{value!r} cannot be written to {CONFIG_NAME}.")
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def write_config(data_dir: Path, values: Mapping[str, Any]) -> Path:
    """Write ``values`` as the data dir's file (atomically: a partial file is never read)."""
    path = config_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = HEADER + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, path)
    return path


def raw_config(data_dir: Path) -> dict[str, Any]:
    """The file's values as written (relative paths kept), for editing."""
    path = config_path(data_dir)
    if not path.is_file():
        return {}
    return _load_toml(path.read_text(encoding="utf-8"), path)


def is_new(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds nothing yet (no settings file, no collections, no catalog)."""
    root = Path(data_dir)
    return not any((root / name).exists() for name in (CONFIG_NAME, "collections", "catalog.db"))


def remember(data_dir: Path, values: Mapping[str, Any]) -> Path | None:
    """At a data dir's creation: write the settings it was created with (``values`` that are not
    None) as its file, so later commands need no flags or variables for them."""
    chosen = {k: v for k, v in values.items() if v is not None}
    for key in MODEL_KEYS:  # a directory named relative to where the command ran: kept absolute
        if isinstance(chosen.get(key), str) and Path(chosen[key]).expanduser().is_dir():
            chosen[key] = str(Path(chosen[key]).expanduser().resolve())
    if not chosen or config_path(data_dir).exists():
        return None
    return write_config(data_dir, chosen)
