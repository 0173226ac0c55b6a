"""``blipsearch moderate check|run|results|calibrate``: content moderation on BLIP scores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import DataDirOpt, JsonOpt, emit, handle_errors, settings_for
from cli.render import cell, table

moderate_app = typer.Typer(no_args_is_help=True, help="Policy screening, image-text consistency, blocklists.")
PolicyOpt = Annotated[Path, typer.Option("--policy", help="Policy file (YAML or JSON).")]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", help="ITC model: hub id or local directory (default: BLIPSEARCH_MODEL, or the data dir's model)."
    ),
]
RunModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="ITC model: hub id or local directory (default: the collection's model)."),
]


def _trigger_line(t: dict[str, Any]) -> str:
    check, act = t["check"], t["action"]
    if "error" in t:
        return f"  {check}: error: {t['error']} -> {act}"
    if check == "policy":
        return f"  policy: {t['category']} {t['prompt']!r} score {t['score']:.3f} >= {t['threshold']} -> {act}"
    if check == "vqa":
        return f"  vqa: {t['category']} {t['question']!r} {t['score']:.3f} >= {t['threshold']} -> {act}"
    if check == "hash_list":
        dist = f"distance {t['distance']} <= {t['threshold']}"
        return f"  hash_list: {t['list']} {t['hash']} {dist} ({t['variant']}) -> {act}"
    if check == "detector":
        return (
            f"  detector: {t['rule']} {t['class']} ({t['category']}) score {t['score']:.3f} >= {t['threshold']} "
            f"box {t['box']} -> {act}"
        )
    if check == "text_rule":
        if t.get("timed_out"):
            return f"  text_rule: {t['rule']} timed out after {t['timeout_ms']} ms on {t['source']} -> {act}"
        return f"  text_rule: {t['rule']} {t['kind']} {t['match']!r} ({t['source']} line {t['line_no']}) -> {act}"
    return f"  {check}: score {t['score']:.3f} (threshold {t['threshold']}) -> {act}"


def _category_line(c: dict[str, Any]) -> str:
    """One category's scores: the ITC screen ((1+cos)/2, the best prompt), then what confirmed
    or not (ITM match probability, or the visual question), and whether it was hit."""
    parts = [f"screen {c['itc']:.3f} ({c['itc_prompt']})" if c.get("itc_prompt") else f"screen {c['itc']:.3f}"]
    if not c.get("screened"):
        parts.append("below the screen threshold")
    if c.get("itm") is not None:
        parts.append(f"itm {c['itm']:.3f} ({c['itm_prompt']})" if c.get("itm_prompt") else f"itm {c['itm']:.3f}")
    if c.get("vqa") is not None:
        parts.append(f"vqa {c['vqa']:.3f} ({c['vqa_question']})" if c.get("vqa_question") else f"vqa {c['vqa']:.3f}")
    parts.append(f"hit -> {c['action']}" if c.get("hit") else "not hit")
    return f"  {c['name']}: " + ", ".join(parts)


def _human_check(p: dict[str, Any]) -> str:
    lines = []
    for r in p["results"]:
        if "error" in r:
            lines.append(f"{r['path']}: error: {r['error']}")
            continue
        lines.append(f"{r['path']}: {r['decision'].upper()}")
        lines += [_category_line(c) for c in r.get("categories") or []]
        lines += [_trigger_line(t) for t in r["triggers"]]
    return "\n".join(lines)


@moderate_app.command("check")
@handle_errors
def check(
    files: Annotated[list[Path], typer.Argument(help="Images to check.")],
    policy: PolicyOpt,
    text: Annotated[
        str | None, typer.Option("--text", help="Accompanying text: checks consistency, and the policy's text_rules.")
    ] = None,
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
    model: RunModelOpt = None,
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
            f"decisions: {cell(p['decisions'])}"
        ),
    )


@moderate_app.command("results")
@handle_errors
def results(
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="Only this collection.")] = None,
    decision: Annotated[
        str | None, typer.Option("--decision", metavar="allow|flag|review|block", help="Only this decision.")
    ] = None,
    policy: Annotated[str | None, typer.Option("--policy-name", help="Only this policy.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000, help="Most results shown.")] = 100,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Results skipped first.")] = 0,
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

    def human(p: dict[str, Any]) -> str:
        if not p["results"]:
            return "no stored moderation results" + (" for these filters" if collection or decision or policy else "")
        body = [
            [r["collection"], r["id"], r["decision"], f"{r['policy']} v{r['policy_version']}",
             ", ".join(t.get("category", t["check"]) for t in r["triggers"])]
            for r in p["results"]
        ]  # fmt: skip
        return table(["collection", "id", "decision", "policy", "triggered by"], body, right=(1,))

    emit({"results": rows}, as_json, human)


@moderate_app.command("calibrate")
@handle_errors
def calibrate(
    labels: Annotated[Path, typer.Option("--labels", help="CSV with columns path,category,label.")],
    policy: PolicyOpt,
    target_precision: Annotated[
        float, typer.Option("--target-precision", min=0.0, max=1.0, help="Precision the suggested thresholds aim at.")
    ] = 0.9,
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
            if "kind" in c:  # a hash list, detector category or text rule
                at = c.get("at_suggested") or c.get("at_current") or {}
                lines.append(
                    f"{name} ({c['kind']}): n={c['n']} positives={c['positives']} "
                    f"suggested threshold={c.get('suggested_threshold')} (precision {at.get('precision')}, "
                    f"recall {at.get('recall')}; current {c['current']})"
                )
                continue
            at = c["at_suggested"] or {}
            lines.append(
                f"{name}: n={c['n']} positives={c['positives']} suggested itm_threshold={c['suggested_itm_threshold']} "
                f"(precision {at.get('precision')}, recall {at.get('recall')}), "
                f"itc_threshold={c['suggested_itc_threshold']} (current {c['current']})"
            )
        return "\n".join(lines)

    emit(report, as_json, human)


@moderate_app.command("backfill-pdq")
@handle_errors
def backfill_pdq(
    collection: Annotated[str, typer.Option("--collection", "-c", help="Image collection to hash.")],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """PDQ hashes for records indexed without one (resumable; a re-run hashes only what is missing)."""
    from indexer.pdq_backfill import backfill_pdq as run_backfill
    from service.collections import open_collection

    settings = settings_for(data_dir)
    coll = open_collection(settings, collection)
    out = run_backfill(
        coll, max_pixels=settings.max_image_pixels, max_bytes=settings.max_file_bytes, progress=not as_json
    )
    emit(
        out,
        as_json,
        lambda p: f"{collection}: hashed {p['hashed']} ({p['already_hashed']} already hashed, {p['failed']} failed)",
    )


@moderate_app.command("hash-list")
@handle_errors
def hash_list(
    path: Annotated[Path, typer.Argument(help="A PDQ hash list: one hex hash a line, or ThreatExchange's CSV.")],
    fmt: Annotated[
        str, typer.Option("--format", metavar="auto|lines|threatexchange_csv", help="The list's format.")
    ] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Read a hash list as a policy would: how many hashes load, and each malformed line (exit 2 if any)."""
    from blipsearch.errors import InvalidInputError
    from moderation.hashlists import read_hashes

    if fmt not in ("auto", "lines", "threatexchange_csv"):
        raise InvalidInputError(f"--format {fmt!r}: use auto, lines or threatexchange_csv.")
    _, report = read_hashes(path, fmt)
    emit(
        report.to_dict(),
        as_json,
        lambda p: "\n".join(
            [f"{p['path']}: {p['loaded']} hashes ({p['format']}), {p['skipped']} other signals, "
             f"{p['malformed']} malformed lines"]
            + [f"  line {e['line']}: {e['error']}" for e in p["errors"]]
        ),
    )  # fmt: skip
    if report.malformed:
        raise typer.Exit(2)
