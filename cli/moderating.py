"""``blipsearch moderate check|run|results|calibrate``: content moderation on BLIP scores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import DataDirOpt, JsonOpt, ModelOpt, emit, handle_errors, settings_for

moderate_app = typer.Typer(no_args_is_help=True, help="Policy screening, image-text consistency, blocklists.")
PolicyOpt = Annotated[Path, typer.Option("--policy", help="Policy file (YAML or JSON).")]


def _human_check(p: dict[str, Any]) -> str:
    lines = []
    for r in p["results"]:
        if "error" in r:
            lines.append(f"{r['path']}: error: {r['error']}")
            continue
        lines.append(f"{r['path']}: {r['decision'].upper()}")
        lines += [
            f"  {t['check']}: {t.get('category', '')} {t.get('prompt', '')!r} score {t['score']:.3f} "
            f">= {t['threshold']} -> {t['action']}"
            if t["check"] == "policy"
            else f"  vqa: {t['category']} {t['question']!r} {t['score']:.3f} >= {t['threshold']} -> {t['action']}"
            if t["check"] == "vqa"
            else f"  {t['check']}: score {t['score']:.3f} (threshold {t['threshold']}) -> {t['action']}"
            for t in r["triggers"]
        ]
    return "\n".join(lines)


@moderate_app.command("check")
@handle_errors
def check(
    files: Annotated[list[Path], typer.Argument(help="Images to check.")],
    policy: PolicyOpt,
    text: Annotated[str | None, typer.Option("--text", help="Accompanying text: checks consistency.")] = None,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check images against a policy: per-category scores, the decision and what triggered it."""
    from blipsearch.errors import ImageDecodeError
    from media.decode import read_image
    from service.moderation import moderator_from_file

    settings = settings_for(data_dir)
    moderator = moderator_from_file(settings, policy, model)
    results: list[dict[str, Any]] = []
    for path in files:
        try:
            img = read_image(path, settings.max_file_bytes, settings.max_image_pixels).image
        except ImageDecodeError as exc:
            results.append({"path": str(path), "error": str(exc)})
            continue
        res = moderator.check_images([img], [text])[0]
        results.append({"path": str(path), **res.to_dict()})
    p = moderator.policy
    emit(
        {
            "policy": p.name,
            "version": p.version,
            "models": moderator.model_ids,
            **({"vqa_token_ids": moderator.vqa.token_ids} if moderator.vqa is not None else {}),
            "results": results,
        },
        as_json,
        _human_check,
    )
    if any("error" in r for r in results):
        raise typer.Exit(2)


@moderate_app.command("run")
@handle_errors
def run(
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to moderate.")],
    policy: PolicyOpt,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Moderate every record of a collection (resumable; re-runs skip what this policy version checked)."""
    from moderation.batch import moderate_collection
    from service.collections import open_collection
    from service.moderation import moderator_from_file
    from storage.catalog import open_catalog

    settings = settings_for(data_dir)
    coll = open_collection(settings, collection)
    moderator = moderator_from_file(settings, policy, model or coll.manifest.model_id)
    out = moderate_collection(settings, open_catalog(settings.catalog_url()), coll, moderator, progress=not as_json)
    emit(
        out,
        as_json,
        lambda p: (
            f"{collection}: checked {p['checked']} ({p['already_done']} already done, {p['failed']} failed); "
            f"decisions {p['decisions']}"
        ),
    )


@moderate_app.command("results")
@handle_errors
def results(
    collection: Annotated[str | None, typer.Option("--collection", "-c")] = None,
    decision: Annotated[str | None, typer.Option("--decision", help="allow, flag, review or block.")] = None,
    policy: Annotated[str | None, typer.Option("--policy-name", help="Only this policy.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 100,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stored moderation results, oldest first."""
    from blipsearch.errors import InvalidInputError
    from moderation.store import DECISIONS, query_results
    from storage.catalog import open_catalog

    if decision is not None and decision not in DECISIONS:
        raise InvalidInputError(f"Unknown decision {decision!r}: use one of {', '.join(DECISIONS)}.")
    rows = query_results(
        open_catalog(settings_for(data_dir).catalog_url()), collection, decision, policy, limit, offset
    )
    emit(
        {"results": rows},
        as_json,
        lambda p: (
            "\n".join(
                f"{r['collection']}/{r['id']}  {r['decision']:<6}  {r['policy']} v{r['policy_version']}  "
                + ", ".join(t.get("category", t["check"]) for t in r["triggers"])
                for r in p["results"]
            )
            or "no results"
        ),
    )


@moderate_app.command("calibrate")
@handle_errors
def calibrate(
    labels: Annotated[Path, typer.Option("--labels", help="CSV with columns path,category,label.")],
    policy: PolicyOpt,
    target_precision: Annotated[float, typer.Option("--target-precision", min=0.0, max=1.0)] = 0.9,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Precision and recall per category over thresholds; suggested thresholds for a target precision."""
    from moderation.calibrate import calibrate as run_calibration
    from service.moderation import moderator_from_file

    settings = settings_for(data_dir)
    report = run_calibration(
        moderator_from_file(settings, policy, model), labels, target_precision=target_precision,
        max_pixels=settings.max_image_pixels,
    )  # fmt: skip

    def human(p: dict[str, Any]) -> str:
        lines = [f"target precision {p['target_precision']}"]
        for name, c in p["categories"].items():
            if not c.get("n"):
                lines.append(f"{name}: no labelled images")
                continue
            at = c["at_suggested"] or {}
            lines.append(
                f"{name}: n={c['n']} positives={c['positives']} suggested itm_threshold={c['suggested_itm_threshold']} "
                f"(precision {at.get('precision')}, recall {at.get('recall')}), "
                f"itc_threshold={c['suggested_itc_threshold']} (current {c['current']})"
            )
        return "\n".join(lines)

    emit(report, as_json, human)
