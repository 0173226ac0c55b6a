"""``blipsearch keys create|revoke|list``: API keys for the HTTP API's writes and admin routes."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import DataDirOpt, JsonOpt, emit, handle_errors, settings_for

if TYPE_CHECKING:
    from storage.catalog import Catalog

keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys (stored hashed in the catalog).")


def _catalog(data_dir: Path | None) -> Catalog:
    from storage.catalog import open_catalog

    return open_catalog(settings_for(data_dir).catalog_url())


@keys_app.command("create")
@handle_errors
def create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key.")],
    scope: Annotated[str, typer.Option("--scope", help="read, write (default) or admin.")] = "write",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key. It is printed once: store it now; only its hash is kept."""
    from storage.api_keys import create_key

    key, info = create_key(_catalog(data_dir), name, scope)
    emit(
        {"key": key, **asdict(info)},
        as_json,
        lambda p: f"{p['key']}\n(id {p['id']}, scope {p['scope']}; shown once: use as 'Authorization: Bearer <key>')",
    )


@keys_app.command("revoke")
@handle_errors
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see keys list).")],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key; requests with it get 401 from now on."""
    from storage.api_keys import revoke_key

    info = revoke_key(_catalog(data_dir), key_id)
    emit(asdict(info), as_json, lambda p: f"revoked {p['id']} ({p['name']})")


@keys_app.command("list")
@handle_errors
def list_(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """List keys (ids, names, scopes; never the keys)."""
    from storage.api_keys import list_keys

    keys = [asdict(k) for k in list_keys(_catalog(data_dir))]
    emit(
        {"keys": keys},
        as_json,
        lambda p: (
            "\n".join(
                f"{k['id']}  {k['scope']:<5}  {'revoked' if k['revoked'] else 'active ':<7}  {k['name']}"
                for k in p["keys"]
            )
            or "no keys"
        ),
    )
