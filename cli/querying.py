"""``blipsearch search`` and ``collections``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from blipsearch.errors import InvalidInputError
from cli.common import CollectionOpt, DataDirOpt, JsonOpt, ModelOpt, emit, handle_errors, settings_for
from search.limits import (
    DEFAULT_FUSION,
    DEFAULT_K,
    DEFAULT_RERANK_K,
    MAX_K,
    MAX_RERANK_K,
    RRF_K,
)

if TYPE_CHECKING:
    from search.results import QueryOptions


def _human_results(p: dict[str, Any]) -> str:
    lines = []
    if not p["results"]:
        lines.append("no results (the collection is empty)" if "explain" not in p else "no results")
    for r in p["results"]:
        itm = f" itm={r['itm_score']:.3f}" if r.get("itm_score") is not None else ""
        what = r.get("uri") or f"[{r.get('external_id')}] {r.get('text')}"
        lines.append(f"{r['score']:+.4f}{itm}  #{r['id']:<8} {what}")
        if r.get("ocr_match"):
            lines.append(f"           text in image: {r['ocr_match']['line']!r}")
    lines += [f"  dropped #{d['id']}: {d['reason']}" for d in p.get("dropped", [])]
    if p.get("explain"):
        from search.plan import format_explain

        lines += ["", format_explain(p["explain"])]
    return "\n".join(lines)


@dataclass(frozen=True)
class SearchFlags:
    """``search``'s flags as one value, built once (``build``) and checked: what is queried,
    how (k, re-rank, fusion, mode), and the per-call ``QueryOptions`` (filters, cut-off, knobs)."""

    text: str | None
    image: Path | None
    k: int
    rerank: bool
    rerank_k: int
    rerank_model: str | None
    fusion: str
    mode: str
    rrf_k: int
    target: str
    options: QueryOptions
    explain: bool

    @classmethod
    def build(cls, filters: dict[str, Any], where: list[str] | None, **flags: Any) -> SearchFlags:
        from search.filters import Filters
        from search.results import QueryOptions

        fields: dict[str, Any] = {}
        for clause in where or []:
            key, sep, value = clause.partition("=")
            if not sep or not key:
                raise InvalidInputError(f"--where takes FIELD=VALUE, got {clause!r}.")
            fields[key] = value.split(",") if "," in value else value
        query = {name: flags.pop(name) for name in ("min_score", "sort", "nprobe", "ef_search", "refine_k")}
        options = QueryOptions(filters=Filters.parse({**filters, "fields": fields}), **query)
        out = cls(options=options, **flags)
        if (out.text is None) == (out.image is None):
            raise InvalidInputError("Give either a TEXT query or --image FILE (not both).")
        if out.rerank_model is not None and not out.rerank:
            raise InvalidInputError("--rerank-model names the ITM model for --rerank; add --rerank.")
        if out.image is not None and out.target not in ("images", "texts", "captions"):
            raise InvalidInputError(f"Unknown --target {out.target!r}: use images, texts or captions.")
        return out


@handle_errors
def search(
    collection: CollectionOpt,
    text: Annotated[str | None, typer.Argument(help="Text query (text→image).")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Query image (image→image, or image→text).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=MAX_K, help="Number of results.")] = DEFAULT_K,
    rerank: Annotated[bool, typer.Option("--rerank", help="Re-rank an ITC shortlist with the ITM head.")] = False,
    rerank_k: Annotated[
        int, typer.Option("--rerank-k", min=1, max=MAX_RERANK_K, help="ITC shortlist size to re-rank.")
    ] = DEFAULT_RERANK_K,
    rerank_model: Annotated[
        str | None,
        typer.Option(
            "--rerank-model",
            help="BLIP / BLIP-2 ITM checkpoint to re-rank with (any collection; default: the collection's own ITM).",
        ),
    ] = None,
    fusion: Annotated[str, typer.Option("--fusion", help="itm+itc (LAVIS, default), itm, or itc.")] = DEFAULT_FUSION,
    mode: Annotated[
        str, typer.Option("--mode", help="Text queries: vector (ITC), keyword, or hybrid (RRF).")
    ] = "vector",
    rrf_k: Annotated[int, typer.Option("--rrf-k", min=1, help="Reciprocal-rank-fusion constant.")] = RRF_K,
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help="Image queries: images (default; texts for text collections) or captions. Text queries in keyword "
            "or hybrid mode: images (all text fields, default), ocr (text read from the images) or captions.",
        ),
    ] = "images",
    uri_prefix: Annotated[str | None, typer.Option("--uri-prefix", help="Only records whose uri starts so.")] = None,
    added_after: Annotated[str | None, typer.Option("--added-after", help="ISO date/time (inclusive).")] = None,
    added_before: Annotated[str | None, typer.Option("--added-before", help="ISO date/time (exclusive).")] = None,
    min_width: Annotated[int | None, typer.Option("--min-width", min=0)] = None,
    max_width: Annotated[int | None, typer.Option("--max-width", min=0)] = None,
    min_height: Annotated[int | None, typer.Option("--min-height", min=0)] = None,
    max_height: Annotated[int | None, typer.Option("--max-height", min=0)] = None,
    where: Annotated[
        list[str] | None, typer.Option("--where", help="FIELD=VALUE or FIELD=V1,V2 (in); repeatable.")
    ] = None,
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Cut-off: ITM probability if re-ranked, else ITC.")
    ] = None,
    sort: Annotated[str, typer.Option("--sort", help="relevance or added_at.")] = "relevance",
    nprobe: Annotated[
        int | None,
        typer.Option("--nprobe", min=1, help="IVF lists to probe (default: the tuned value)."),
    ] = None,
    ef_search: Annotated[
        int | None,
        typer.Option("--ef-search", min=1, help="HNSW search depth (default: the tuned value)."),
    ] = None,
    refine_k: Annotated[
        int | None,
        typer.Option(
            "--refine-k",
            help="PQ/SQ indexes: shortlist re-scored exactly from the stored vectors "
            "(default: the tuned value; 0/1 off).",
        ),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Print the query plan and what ran (depths, re-rank, what is missing).")
    ] = False,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a collection by text, or by example image with --image."""
    flags = SearchFlags.build(
        {
            "uri_prefix": uri_prefix,
            "added_after": added_after,
            "added_before": added_before,
            "min_width": min_width,
            "max_width": max_width,
            "min_height": min_height,
            "max_height": max_height,
        },
        where,
        text=text,
        image=image,
        k=k,
        rerank=rerank,
        rerank_k=rerank_k,
        rerank_model=rerank_model,
        fusion=fusion,
        mode=mode,
        rrf_k=rrf_k,
        target=target,
        min_score=min_score,
        sort=sort,
        nprobe=nprobe,
        ef_search=ef_search,
        refine_k=refine_k,
        explain=explain,
    )
    emit(run_search(settings_for(data_dir), collection, flags, model), as_json, _human_results)


def run_search(settings: Any, collection: str, f: SearchFlags, model: str | None = None) -> dict[str, Any]:
    """Plan and run the query ``f`` describes; the ``search`` payload."""
    from service.engines import open_engine
    from storage.text_analysis import ocr_match_fields

    engine = open_engine(settings, collection, model=model, rerank=f.rerank, rerank_model=f.rerank_model)
    common: dict[str, Any] = {
        "k": f.k,
        "rerank": f.rerank,
        "rerank_k": f.rerank_k,
        "fusion": f.fusion,
        "options": f.options,
    }
    if f.image is not None:
        from media.decode import decode_image, read_file

        raw = read_file(f.image, settings.max_file_bytes)
        img = decode_image(raw.data, settings.max_image_pixels).image
        if f.target == "captions":
            result = engine.captions_for_image(img, f.k)
        else:
            result = engine.execute(engine.plan_image(img, **common))
    else:
        fields = {"images": "all", "all": "all", "ocr": "ocr", "captions": "captions"}
        if f.target not in fields:
            raise InvalidInputError(f"Unknown --target {f.target!r} for a text query: use images, ocr or captions.")
        plan = engine.plan_text(f.text or "", mode=f.mode, rrf_k=f.rrf_k, target=fields[f.target], **common)
        result = engine.execute(plan)
    payload = {
        "collection": collection,
        "query": f.text if f.image is None else str(f.image),
        "rerank": f.rerank,
        "fusion": f.fusion if f.rerank else "itc",
        "rerank_model": getattr(engine.reranker, "model_id", None) if f.rerank else None,
        "mode": f.mode if f.image is None else None,
        "target": f.target if f.image is not None or f.target != "images" else None,
        "results": [
            {**h.to_dict(), **(ocr_match_fields(f.text, h.record) if f.text is not None else {})} for h in result.hits
        ],
        "dropped": result.dropped,
        "timing_ms": result.timing_ms,
    }
    if f.explain:
        payload["explain"] = result.explain
    return payload


@handle_errors
def collections(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """List collections with their model and size."""
    from service.collections import list_collections

    rows = list_collections(settings_for(data_dir))

    def human(p: dict[str, Any]) -> str:
        if not p["collections"]:
            return "no collections yet: blipsearch index PATH --collection NAME"

        def built(c: dict[str, Any]) -> str:  # e.g. fast/bf16/openvino
            return "/".join(c[k] for k in ("precision", "embed_dtype", "embed_runtime") if c.get(k)) or "-"

        return "\n".join(
            f"{c['name']:<24} {c['kind']:<7} {c['count']:>9}  {built(c):<18} {c['model_id']}" for c in p["collections"]
        )

    emit({"collections": rows}, as_json, human)
