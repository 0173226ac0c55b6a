"""The BENCHMARKS.md section of scripts/bench/scale.py (one run's JSON result -> markdown)."""

from __future__ import annotations

from typing import Any

from common import machine_line, update_markdown


def reproduce(s: dict[str, Any]) -> str:
    from scale import REFINE, SERVE_NPROBE, default_spec, default_train

    out = " --quick" if s["n"] == 1_000_000 else "" if s["n"] == 10_000_000 else f" --n {s['n']}"
    if s["spec"] != default_spec(s["n"]):
        out += f" --spec {s['spec']}"
    if s["train"] != default_train(s["n"]):
        out += f" --train {s['train']}"
    if s.get("refine", REFINE) != REFINE:
        out += f" --refine {s['refine']}"
    if s.get("kmeans", "flat") != "flat":
        out += f" --kmeans {s['kmeans']}"
    if s["serve_nprobe"] != SERVE_NPROBE:
        out += f" --serve-nprobe {s['serve_nprobe']}"
    return out


def write_markdown(r: dict[str, Any], m: dict[str, Any]) -> None:
    s, b, on, mem = r["settings"], r["build"], r["serve_on_disk"], r["serve_in_memory"]
    n = s["n"]
    refine = on.get("serve_refine", 0)
    anon = on.get("anon_after_serving_mb", float("nan"))
    serving = f"nprobe {on['serve_nprobe']}" + (f" with an exact re-rank of the top {refine}" if refine else "")
    lines = [
        f"## Scale: on-disk IVF-PQ at {n:,} vectors (`scripts/bench/scale.py`)",
        "",
        f"Machine: {machine_line(m)}; shared with other engineers' jobs while it ran (noisy timings). "
        f"{n:,} structured 256-d vectors (near-duplicate clusters, as index_types), memory-mapped from a "
        f"{r['vectors_bytes'] / 1e9:.1f} GB file; index {s['spec']} trained on {s['train']:,}; "
        f"FAISS threads: {s['threads']}; build budget {s['memory_gb']} GB. Reproduce: "
        f"`python scripts/bench/scale.py{reproduce(s)}`.",
        "",
        f"* Build: {b['build_s']:.0f} s (training {b['train_s']:.0f} s), peak RSS {b['peak_rss_mb']:.0f} MB "
        f"(VmHWM, with the merge's file-backed mapped pages), peak RssAnon (heap) "
        f"{b.get('peak_anon_mb', float('nan')):.0f} MB, of which training "
        f"{b.get('train_peak_anon_mb', float('nan')):.0f} MB (blocks of {b['block_vectors']:,} vectors merged on "
        f"disk); index on disk {r['disk_bytes'] / 1e6:.0f} MB ({r['disk_bytes'] / n:.1f} B/vector)"
        + (
            " (build measured by the previous run of the same settings; this run re-ran only the serving "
            "phases against that index: `--reuse-build`)."
            if b.get("reused")
            else "."
        ),
        f"* Serving (fresh process, after {on['serve_queries']} queries at {serving}): RSS "
        f"{on['rss_after_serving_mb']:.0f} MB memory-mapped (RssAnon {anon:.0f} MB) "
        f"vs {mem['rss_after_serving_mb']:.0f} MB with the lists "
        f"in RAM (baseline, same run); the process holds {on['rss_before_open_mb']:.0f} MB before opening "
        f"(Python, numpy, FAISS) and {on.get('rss_after_open_mb', float('nan')):.0f} MB right after opening the "
        f"on-disk index. Single-query QPS at that nprobe: {on['serve_qps']:.0f} on disk, "
        f"{mem['serve_qps']:.0f} in RAM.",
        "",
        "| nprobe | exact re-rank (refine) depth | recall@10 | QPS on disk | QPS lists in RAM |",
        "|---|---|---|---|---|",
    ]
    base = {(x["nprobe"], x["rerank"]): x for x in mem["rows"]}
    for row in on["rows"]:
        other = base.get((row["nprobe"], row["rerank"]))
        depth = row["rerank"] or "off"
        lines.append(
            f"| {row['nprobe']} | {depth} | {row['recall_at_10']:.3f} | {row['qps']:.0f} | "
            + (f"{other['qps']:.0f} |" if other else "- |")
        )
    c = on["chosen"]
    lines += [
        "",
        f"Extrapolated (on paper, from the measured {r['disk_bytes'] / n:.1f} B/vector on disk and "
        f"{c['qps']:.0f} QPS at nprobe {c['nprobe']} with an exact re-rank of the top {c['rerank']}, recall@10 "
        f"{c['recall_at_10']:.3f} (the cheapest measured setting at or above 0.9, else the best); QPS "
        "scaled by the work per query (coarse quantizer nlist·D + PQ scan nprobe·N/nlist codes + re-rank) at "
        f"the same list length ({n // int(s['spec'].split(',')[0][3:].split('_')[0]):,} vectors a list) and "
        f"nprobe; target {s['target_qps']:.0f} QPS, one index "
        "replica per node, same 2-core class of node):",
        "",
        "| vectors | nlist | index on disk | RAM per node (fixed) | lists read per query | QPS per node "
        "| nodes for target |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in r["extrapolation"]:
        lines.append(
            f"| {t['vectors']:,} | {t['nlist']:,} | {t['disk_gb']:.0f} GB | {t['ram_fixed_gb']:.2f} GB | "
            f"{t['bytes_read_per_query_mb']:.1f} MB | {t['qps_per_node']:.1f} | {t['nodes_for_target']} |"
        )
    lines += [
        "",
        "The re-rank reads the shortlist's exact vectors from the vector file by plain reads (blipsearch reads "
        "them from the Parquet records: `refine_k`); RAM beyond the fixed part is page cache for the lists and "
        "vectors queries touch, which the OS sizes to what is free. Lists read per query include the re-rank's "
        "exact vectors (1 KB each).",
    ]
    update_markdown(f"scale_{n}", "\n".join(lines))
