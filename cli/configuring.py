"""``blipsearch config show|set|unset``: the data dir's own settings file (``DATA_DIR/blipsearch.toml``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from blipsearch import dir_config
from blipsearch.errors import InvalidInputError
from cli.common import DataDirOpt, JsonOpt, emit, handle_errors, settings_for

config_app = typer.Typer(
    no_args_is_help=True,
    help="The data dir's own settings (DATA_DIR/blipsearch.toml): defaults every command reads, below flags "
    "and BLIPSEARCH_* variables.",
)
# What `config show` lists besides the keys the file sets.
SHOWN = ("model", "caption_model", "device", "precision", "database_url")


def _parse(key: str, raw: str) -> Any:
    """``raw`` as the setting's type: text stays text for text settings; numbers, booleans and
    JSON lists / objects for the others (validated by the settings themselves)."""
    from blipsearch.config import Settings

    field = Settings.model_fields[key]
    if field.annotation in (str, str | None, Path, Path | None):
        if key in dir_config.MODEL_KEYS and Path(raw).expanduser().is_dir():
            return str(Path(raw).expanduser().resolve())  # a directory named from here, kept absolute
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _known(key: str) -> str:
    from blipsearch.config import Settings

    if key not in Settings.model_fields or key in dir_config.NOT_IN_FILE:
        names = ", ".join(k for k in Settings.model_fields if k not in dir_config.NOT_IN_FILE)
        raise InvalidInputError(f"Unknown setting {key!r}; settings: {names}.")
    return key


@config_app.command("show")
@handle_errors
def show(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """The settings in effect for this data dir and where each comes from (flag, env, file, default)."""
    root = dir_config.data_dir_from_env(data_dir)
    settings = settings_for(root)
    in_file = dir_config.raw_config(root)
    rows = []
    for key in dict.fromkeys([*SHOWN, *in_file]):
        source = "env" if dir_config.set_in_env(key) else "file" if key in in_file else "default"
        rows.append({"key": key, "value": getattr(settings, key), "source": source})
    payload = {"data_dir": str(root), "file": str(dir_config.config_path(root)), "settings": rows}

    def human(p: dict[str, Any]) -> str:
        from cli.render import table

        exists = Path(p["file"]).is_file()
        head = f"data dir {p['data_dir']}; settings file {p['file']}" + ("" if exists else " (none yet)")
        body = table(["setting", "value", "from"], [[r["key"], r["value"], r["source"]] for r in p["settings"]])
        return head + "\n" + body

    emit(payload, as_json, human)


@config_app.command("set")
@handle_errors
def set_(
    items: Annotated[
        list[str],
        typer.Argument(
            help="KEY VALUE pairs: a setting name (model, caption_model, device, batch_size, ...) and its value "
            "(a model directory, a number, true/false, ...); several pairs in one call."
        ),
    ],
    data_dir: DataDirOpt = None,
) -> None:
    """Write KEY = VALUE to the data dir's settings file (each value validated first)."""
    from blipsearch.config import Settings, get_settings

    if len(items) % 2:
        raise InvalidInputError(f"config set takes KEY VALUE pairs; {items[-1]!r} has no value.")
    root = dir_config.data_dir_from_env(data_dir)
    values = dir_config.raw_config(root)
    pairs = [(_known(k), v) for k, v in zip(items[::2], items[1::2], strict=True)]
    for key, raw in pairs:
        values[key] = _parse(key, raw)
    dir_config.check_keys(values, Settings.model_fields, dir_config.config_path(root))
    # refuses a bad value, named by its key
    get_settings(data_dir=root, **{k: dir_config.read_value(root, k, values[k]) for k, _ in pairs})
    path = dir_config.write_config(root, values)
    for key, _ in pairs:
        typer.echo(f"{path}: {key} = {values[key]}")


@config_app.command("unset")
@handle_errors
def unset(
    key: Annotated[str, typer.Argument(help="Setting name to remove from the file.")],
    data_dir: DataDirOpt = None,
) -> None:
    """Remove KEY from the data dir's settings file (the variable or the default applies again)."""
    root = dir_config.data_dir_from_env(data_dir)
    values = dir_config.raw_config(root)
    if values.pop(_known(key), None) is None:
        typer.echo(f"{dir_config.config_path(root)}: {key} was not set")
        return
    path = dir_config.write_config(root, values)
    typer.echo(f"{path}: {key} removed")
