"""``blipsearch models``: the model families blipsearch loads and what each can do."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.common import JsonOpt, emit, handle_errors


def _human(p: dict[str, Any]) -> str:
    lines = [f"{'family':<10} {'capabilities':<22} {'dim':>5}  examples"]
    for f in p["families"]:
        examples = ", ".join(e["checkpoint"] for e in f["examples"])
        dim = f["dim"] if f["dim"] is not None else "-"
        lines.append(f"{f['family']:<10} {','.join(f['capabilities']):<22} {dim:>5}  {examples}")
    c = p.get("checkpoint")
    if c:
        lines.append(
            f"\n{c['checkpoint']}: {c['family']} ({c['model_type']}), {','.join(c['capabilities'])}, dim {c['dim']}"
        )
    return "\n".join(lines)


@handle_errors
def models(
    model: Annotated[
        str | None,
        typer.Option("--model", help="Also report this checkpoint's family, capabilities and dimension (config only)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the supported model families: what each can do (embed, itm, caption, vqa) and the dimension."""
    from models.families import CAPABILITIES, MODEL_FAMILIES

    payload: dict[str, Any] = {
        "capabilities": list(CAPABILITIES),
        "families": [f.describe() for f in MODEL_FAMILIES.values()],
    }
    if model is not None:
        from models.registry import inspect_checkpoint

        payload["checkpoint"] = inspect_checkpoint(model)
    emit(payload, as_json, _human)
