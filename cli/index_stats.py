"""``blipsearch index-stats``: what index a collection has, and how well it recalls."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.common import CollectionOpt, DataDirOpt, JsonOpt, emit, handle_errors, settings_for


def _human(p: dict[str, Any]) -> str:
    lines = [
        f"{p['collection']}: {p['records']} records, {p['vectors']} vectors, index {p['spec']} "
        f"({'automatic' if p['auto'] else 'explicit'}), ~{p['memory_bytes'] / 2**20:.1f} MiB",
        f"  search defaults: {p['search_defaults'] or '-'}; automatic choice now: {p['recommended_spec']}",
        f"  exact re-rank (refine_k): {p['refine_k'] or 'off'}",
        f"  precision: {p['precision'] or 'unrecorded'} (embeddings computed in {p['embed_dtype'] or '?'}"
        f" by {p.get('embed_runtime') or '?'})",
    ]
    if p.get("photo_fields"):
        lines.append("  photo fields: " + ", ".join(f"{k} {v}" for k, v in p["photo_fields"].items()))
    rec = p.get("recall")
    if rec:
        refined = f", exact re-rank of the top {rec['refine_k']}" if rec.get("refine_k") else ""
        lines.append(f"  recall@{rec['k']} on {rec['queries']} held-out records (vs exact search{refined}):")
        for row in rec["rows"]:
            knob = f"{rec['knob']}={row[rec['knob']]}: " if rec.get("knob") else ""
            lines.append(f"    {knob}recall {row['recall_at_k']:.4f}, {row['qps']:.0f} queries/s")
    return "\n".join(lines)


@handle_errors
def index_stats(
    collection: CollectionOpt,
    eval_recall: Annotated[
        bool, typer.Option("--eval-recall", help="Measure recall@10 against exact search on held-out records.")
    ] = False,
    queries: Annotated[int, typer.Option("--queries", min=1, max=100_000, help="Held-out queries.")] = 200,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Index type, size, memory, tuned search defaults and (optionally) recall@10 vs exact."""
    from service.collections import index_stats as run

    payload = run(settings_for(data_dir), collection, eval_recall=eval_recall, queries=queries)
    emit(payload, as_json, _human)
