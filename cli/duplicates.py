"""``blipsearch duplicates``: duplicate groups in tiers, and stacks."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.common import CollectionOpt, DataDirOpt, JsonOpt, emit, handle_errors, settings_for


def _human(p: dict[str, Any]) -> str:
    if "groups" not in p:
        return f"stack of {p['keeper']}: {len(p.get('members', []))} records " + (
            "unstacked (shown in search again)" if p.get("unstacked") else "hidden in search (shown on the keeper)"
        )
    counts = ", ".join(f"{t} {n}" for t, n in p["counts"].items())
    lines = [f"{p['collection']}: {len(p['groups'])} duplicate groups ({counts})"]
    lines += [f"  {t} skipped: {why}" for t, why in p["skipped"].items()]
    for g in p["groups"]:
        mark = " [stacked]" if g.get("stacked") else ""
        lines.append(f"{g['group']}{mark}: {g['tier']}: {g['why']}; scores {g['scores']}")
        lines.append(f"  keeper {g['keeper']}: {g['keeper_why']}")
        for m in g["members"]:
            where = m.get("path") or m.get("uri")
            lines.append(f"  {'*' if m['keeper'] else ' '} {m['id']} {where} {m.get('width')}x{m.get('height')}")
    return "\n".join(lines)


@handle_errors
def duplicates(
    collection: CollectionOpt,
    tier: Annotated[
        list[str] | None, typer.Option("--tier", help="Only these tiers: exact, reencoded, burst, near (repeatable).")
    ] = None,
    stack: Annotated[
        str | None, typer.Option("--stack", help="Stack this group under its keeper (search shows the keeper only).")
    ] = None,
    unstack: Annotated[
        str | None, typer.Option("--unstack", help="Undo a stack: its group id, or its keeper's record id.")
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Duplicate groups (exact copies, re-encoded/resized, bursts, near-duplicates), each with its
    reasons and a proposed keeper. Nothing is ever deleted; stacking only hides from search."""
    from service import duplicates as svc

    settings = settings_for(data_dir)
    if stack and unstack:
        raise typer.BadParameter("use --stack or --unstack, not both")
    if stack:
        payload = svc.stack(settings, collection, group=stack)
    elif unstack:
        keeper = int(unstack) if unstack.isdigit() else None
        payload = {**svc.unstack(settings, collection, group=None if keeper is not None else unstack, keeper=keeper)}
        payload["unstacked"] = True
    else:
        payload = svc.duplicates(settings, collection, tier)
    emit(payload, as_json, _human)
