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
    from cli.render import CAPTION_WIDTH, clip, score_kind, table

    lines = []
    if p.get("no_confident_match"):
        lines.append("no confident match: no result reached the ITM threshold; these are only the nearest")
    if p.get("understood") and (p["understood"]["filters"] or len(p["understood"]["parts"]) > 1):
        from search.query.parser import format_understood

        lines.append(format_understood(p["understood"]))
    if not p["results"]:
        lines.append(f"no results: {p.get('empty_reason') or 'nothing matched'}")
    rows = []
    for r in p["results"]:
        kind = score_kind(r, p)
        score = f"{kind} {r['score']:.3f}"
        if r.get("itm_score") is not None and kind != "itm":
            score += f" (itm {r['itm_score']:.3f}, itc {r['itc_score']:.3f})"
        what = r.get("uri") or f"[{r.get('external_id')}] {r.get('text')}"
        rows.append([score, f"#{r['id']}", what, clip(r.get("caption") or "", CAPTION_WIDTH)])
        if r.get("ocr_match"):
            rows.append(["", "", f"text in image: {r['ocr_match']['line']!r}", ""])
    if rows:
        with_captions = any(r[3] for r in rows)
        headers = ["score", "id", "record", "caption"]
        lines.append(table(headers if with_captions else headers[:3], [r if with_captions else r[:3] for r in rows]))
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
    raw: bool
    like: list[int]
    unlike: list[int]
    text_weight: float
    image_weight: float
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
        text, text_opt = flags.pop("text"), flags.pop("text_opt")
        if text is not None and text_opt is not None:
            raise InvalidInputError("Give the text once: as TEXT or as --text, not both.")
        like, unlike = (_ids(flags.pop(name), f"--{name}") for name in ("like", "unlike"))
        out = cls(options=options, text=text if text is not None else text_opt, like=like, unlike=unlike, **flags)
        if out.text is None and out.image is None and not out.like and not out.unlike:
            raise InvalidInputError("Give a TEXT query, --image FILE, or --like ID (or a mix: they are weighed).")
        if out.image is None and out.image_weight != 1.0:
            raise InvalidInputError("--image-weight weighs --image in a composed query: add --image.")
        if out.rerank_model is not None and not out.rerank:
            raise InvalidInputError("--rerank-model names the ITM model for --rerank; add --rerank.")
        if out.image is not None and out.target not in ("images", "texts", "captions"):
            raise InvalidInputError(f"Unknown --target {out.target!r}: use images, texts or captions.")
        return out

    @property
    def composed(self) -> bool:
        """More than one plain text or one image: a weighted query (search/query/)."""
        return bool(self.like or self.unlike) or (self.image is not None and self.text is not None)


def _ids(values: list[str] | None, flag: str) -> list[int]:
    """``--like 3,5 --like 7`` as [3, 5, 7]."""
    out: list[int] = []
    for v in values or []:
        for item in v.split(","):
            if not item.strip().isdigit():
                raise InvalidInputError(
                    f"{flag} takes record ids (integers, comma-separated or repeated), got {item!r}."
                )
            out.append(int(item))
    return out


@handle_errors
def search(
    collection: CollectionOpt,
    text: Annotated[
        str | None, typer.Argument(help="Text query (text→image): the query language of docs/queries.md.")
    ] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Query image (image→image, or image→text).")] = None,
    text_opt: Annotated[
        str | None, typer.Option("--text", help='Text composed with --image ("this, but at night"), or the query.')
    ] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Search the text as one visual text: no parsing.")] = False,
    like: Annotated[
        list[str] | None, typer.Option("--like", help="Record ids to search more like (repeatable or comma list).")
    ] = None,
    unlike: Annotated[
        list[str] | None, typer.Option("--unlike", help="Record ids to search less like (repeatable or comma list).")
    ] = None,
    text_weight: Annotated[float, typer.Option("--text-weight", help="Multiplies the text parts' weights.")] = 1.0,
    image_weight: Annotated[float, typer.Option("--image-weight", help="The --image part's weight.")] = 1.0,
    k: Annotated[
        int, typer.Option("-k", "--limit", "--k", min=1, max=MAX_K, help="How many results to return (at most).")
    ] = DEFAULT_K,
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
    min_width: Annotated[
        int | None, typer.Option("--min-width", min=0, help="Only images at least this wide (px).")
    ] = None,
    max_width: Annotated[
        int | None, typer.Option("--max-width", min=0, help="Only images at most this wide (px).")
    ] = None,
    min_height: Annotated[
        int | None, typer.Option("--min-height", min=0, help="Only images at least this tall (px).")
    ] = None,
    max_height: Annotated[
        int | None, typer.Option("--max-height", min=0, help="Only images at most this tall (px).")
    ] = None,
    taken_after: Annotated[str | None, typer.Option("--taken-after", help="Taken at/after (ISO date/time).")] = None,
    taken_before: Annotated[str | None, typer.Option("--taken-before", help="Taken before (ISO date/time).")] = None,
    near: Annotated[str | None, typer.Option("--near", help="GPS within a radius: LAT,LON,RADIUS_KM.")] = None,
    place: Annotated[str | None, typer.Option("--place", help="Country, region or city (any case/accents).")] = None,
    camera: Annotated[str | None, typer.Option("--camera", help="Camera make or model contains this.")] = None,
    where: Annotated[
        list[str] | None, typer.Option("--where", help="FIELD=VALUE or FIELD=V1,V2 (in); repeatable.")
    ] = None,
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Cut-off: ITM probability if re-ranked, else ITC.")
    ] = None,
    sort: Annotated[str, typer.Option("--sort", help="relevance, added_at or taken_at (newest first).")] = "relevance",
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
            **{"taken_after": taken_after, "taken_before": taken_before, "near": near},
            **{"place": place, "camera": camera},  # photo filters (docs/photos.md)
        },
        where,
        text=text,
        text_opt=text_opt,
        image=image,
        raw=raw,
        like=like,
        unlike=unlike,
        text_weight=text_weight,
        image_weight=image_weight,
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
    from search.query.build import QueryInput, plan_for, understand
    from search.query.parts import rerank_text
    from service.engines import open_engine
    from storage.text_analysis import ocr_match_fields

    engine = open_engine(settings, collection, model=model, rerank=f.rerank, rerank_model=f.rerank_model)
    f.options.no_match_threshold = settings.no_match_threshold
    common: dict[str, Any] = {
        "k": f.k,
        "rerank": f.rerank,
        "rerank_k": f.rerank_k,
        "fusion": f.fusion,
        "options": f.options,
    }
    from search.why_empty import describe_empty

    img = None
    plan = None
    if f.image is not None:
        from blipsearch.errors import ImageDecodeError
        from media.decode import decode_image, read_file

        if f.target == "texts" and engine.kind != "texts":
            raise InvalidInputError(
                f"--target texts searches a text collection; {collection!r} holds images: use images or captions."
            )
        if not f.image.is_file():  # the decoder's message would not name the path
            raise InvalidInputError(f"Query image {str(f.image)!r} does not exist or is not a file.")
        try:
            raw = read_file(f.image, settings.max_file_bytes)
            img = decode_image(raw.data, settings.max_image_pixels).image
        except ImageDecodeError as exc:
            raise InvalidInputError(f"Query image {str(f.image)!r}: {exc}") from None
    u = None
    if img is not None and not f.composed:
        if f.target == "captions":
            result = engine.captions_for_image(img, f.k, f.options, rerank=f.rerank)
        else:
            plan = engine.plan_image(img, **common)
            result = engine.execute(plan)
    else:
        fields = {"images": "all", "all": "all", "ocr": "ocr", "captions": "captions"}
        if f.target not in fields or (img is not None and f.target != "images"):
            raise InvalidInputError(f"Unknown --target {f.target!r} for a text query: use images, ocr or captions.")
        query = QueryInput(
            text=f.text,
            raw=f.raw,
            text_weight=f.text_weight,
            image=img,
            image_weight=f.image_weight,
            image_source=str(f.image) if f.image is not None else "image",
            positive_ids=f.like,
            negative_ids=f.unlike,
        )
        u = understand(query)
        common["options"] = f.options
        k = common.pop("k")
        plan = plan_for(
            engine, u, k, common.pop("options"), mode=f.mode, rrf_k=f.rrf_k, target=fields[f.target], **common
        )
        result = engine.execute(plan)
    visual = rerank_text(u.parts) if u is not None else None
    empty_reason = describe_empty(engine, result, plan)
    payload = {
        "collection": collection,
        "query": f.text if f.image is None else str(f.image),
        "rerank": f.rerank,
        "fusion": f.fusion if f.rerank else "itc",
        "rerank_model": getattr(engine.reranker, "model_id", None) if f.rerank else None,
        "mode": f.mode if f.image is None else None,
        "target": f.target if f.image is not None or f.target != "images" else None,
        "results": [{**h.to_dict(), **(ocr_match_fields(visual, h.record) if visual else {})} for h in result.hits],
        "dropped": result.dropped,
        "timing_ms": result.timing_ms,
        "no_confident_match": result.no_confident_match,
        "empty_reason": empty_reason,
    }
    if u is not None:
        payload["understood"] = u.to_dict()
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

        from cli.render import table

        def built(c: dict[str, Any]) -> str:  # e.g. fast/bf16/openvino
            return "/".join(c[k] for k in ("precision", "embed_dtype", "embed_runtime") if c.get(k)) or "-"

        rows = [[c["name"], c["kind"], c["count"], built(c), c["model_id"]] for c in p["collections"]]
        return table(["name", "kind", "records", "built", "model"], rows, right=(2,))

    emit({"collections": rows}, as_json, human)
