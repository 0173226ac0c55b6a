"""Shared CLI pieces: option types, output, and the domain-error → exit-code edge."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from blipsearch.errors import BlipsearchError, InvalidInputError, disk_full_error, is_disk_full

if TYPE_CHECKING:
    from blipsearch.config import Settings

F = TypeVar("F", bound=Callable[..., Any])

CollectionOpt = Annotated[str, typer.Option("--collection", "-c", help="Collection name.")]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Hub id or local directory (default: the collection's model, else BLIPSEARCH_MODEL)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (BLIPSEARCH_DATA_DIR).")]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        "--precision",
        help="exact (fp32, full decode: equals the transformers forward) or fast (bf16 where the CPU has native "
        "bf16, JPEG draft decoding); default BLIPSEARCH_PRECISION, else fast.",
    ),
]


def emit(payload: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], str]) -> None:
    if as_json:
        typer.echo(json.dumps(payload, ensure_ascii=False, default=str))
    else:
        typer.echo(human(payload))


def handle_errors(fn: F) -> F:
    """Map domain errors to a one-line message (or a JSON error) and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BlipsearchError as err:
            if kwargs.get("as_json"):
                typer.echo(json.dumps({"error": {"code": err.code, "message": str(err)}}))
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; committed shards are kept, re-run the command to resume", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:  # a full disk from a library (pyarrow, sqlite3): one line, exit 6
            if not is_disk_full(exc):
                raise
            full = disk_full_error(exc)
            if kwargs.get("as_json"):
                typer.echo(json.dumps({"error": {"code": full.code, "message": str(full)}}))
            typer.echo(f"error: {full}", err=True)
            raise typer.Exit(full.exit_code) from None

    return wrapper  # type: ignore[return-value]


def write_output(path: Path, data: bytes | str, flag: str = "--output") -> None:
    """Write a command's result to ``path``; an unwritable path is a one-line error naming the flag."""
    try:
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
    except OSError as exc:
        if is_disk_full(exc):
            raise
        raise InvalidInputError(f"Cannot write {flag} {path}: {exc.strerror or exc}") from None


def settings_for(data_dir: Path | None, **extra: Any) -> Settings:
    from blipsearch.config import get_settings  # pydantic-settings: only once a command runs

    if extra.get("precision") not in (None, "exact", "fast"):
        raise InvalidInputError(f"Unknown precision {extra['precision']!r}: use 'exact' or 'fast'.")
    return get_settings(data_dir=data_dir, **extra)


def chosen_models(settings: Settings, **flags: str | None) -> dict[str, str | None]:
    """The models a command was explicitly given (``flags``, else a BLIPSEARCH_* variable), by
    setting name; None where it ran on the built-in default."""
    from blipsearch.dir_config import set_in_env

    return {key: flag or (str(getattr(settings, key)) if set_in_env(key) else None) for key, flag in flags.items()}


def check_hub_models(*models: tuple[str | None, str]) -> None:
    """Before a command imports torch and transformers (seconds): refuse each ``(source, role)``
    model that cannot load, a hub id that is not cached while the Hub is offline or unreachable,
    with the loader's own one-line ModelLoadError (exit 5) naming the role's flag and variable.
    ``role``: ``"model"`` or ``"caption"``. Local directories pass at once."""
    from models.loading import CAPTION_HINT, MODEL_HINT, check_hub, naming, resolve_source
    from models.openclip_config import is_openclip_source

    hints = {"model": MODEL_HINT, "caption": CAPTION_HINT}
    for source, role in models:
        if source and not (role == "model" and is_openclip_source(source)):  # OpenCLIP: its own loader checks
            with naming(hints[role]):
                check_hub(resolve_source(source))
