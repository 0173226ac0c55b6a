"""``blipsearch models``: the model families blipsearch loads and what each can do."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.common import JsonOpt, emit, handle_errors


def _yes(v: object) -> str:
    return {True: "yes", False: "-"}.get(v, str(v))  # type: ignore[call-overload]


def _human(p: dict[str, Any]) -> str:
    head = f"{'family':<13} {'dim':>5} {'multilingual':<12} {'itm':<4} {'captions':<8} {'vqa':<4} examples"
    lines = [head]
    for f in p["families"]:
        examples = ", ".join(e["checkpoint"] for e in f["examples"])
        dim = f["dim"] if f["dim"] is not None else "-"
        lines.append(
            f"{f['family']:<13} {dim:>5} {_yes(f['multilingual']):<12} {_yes(f['itm']):<4} "
            f"{_yes(f['captions']):<8} {_yes(f['vqa']):<4} {examples}"
        )
    lines.append("\nfast runtimes (precision=fast; stages not named run fp32):")
    for f in p["families"]:
        for device, how in f["fast_runtimes"].items():
            lines.append(f"  {f['family']:<13} {device:<5} {how}")
    c = p.get("checkpoint")
    if c:
        ml = "multilingual" if c["multilingual"] else "English text"
        lines.append(
            f"\n{c['checkpoint']}: {c['family']} ({c['model_type']}), {','.join(c['capabilities'])}, "
            f"dim {c['dim']}, {ml}"
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
    """List the supported model families: dimension, multilingual text, ITM, captions, VQA, fast runtimes."""
    from models.families import CAPABILITIES, MODEL_FAMILIES

    payload: dict[str, Any] = {
        "capabilities": list(CAPABILITIES),
        "families": [f.describe() for f in MODEL_FAMILIES.values()],
    }
    if model is not None:
        from models.registry import inspect_checkpoint

        payload["checkpoint"] = inspect_checkpoint(model)
    emit(payload, as_json, _human)
