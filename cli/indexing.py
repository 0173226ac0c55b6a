"""``blipsearch index``, ``index-texts`` and ``reindex``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from blipsearch import dir_config
from blipsearch.limits import BATCH_SIZE, DECODE_WORKERS, SHARD_SIZE
from cli.captioning import BeamsOpt, CaptionModelOpt, MaxTokensOpt, PromptOpt
from cli.common import (
    CollectionOpt,
    DataDirOpt,
    JsonOpt,
    ModelOpt,
    PrecisionOpt,
    check_hub_models,
    chosen_models,
    emit,
    handle_errors,
    settings_for,
)


def _existing_model(settings: Any, collection: str) -> str | None:
    """The model an existing collection was built with (it is indexed with that one), else None."""
    from storage.collection import Collection

    if not Collection.exists(settings.data_dir, collection):
        return None
    return Collection.open(settings.data_dir, collection).manifest.model_id


def _human_report(p: dict[str, Any], inputs: list[str] | None = None) -> str:
    if inputs is not None and not p.get("total"):  # nothing was even tried: say so, not "added 0"
        size = p.get("collection_size", 0)
        return f"{p['collection']}: no images found in {', '.join(inputs)} (collection now {size} records)"
    lines = [
        f"{p['collection']}: added {p.get('added', 0)}, duplicates {p.get('skipped_duplicates', 0)}, "
        f"failed {p.get('failed', 0)}, updated {p.get('updated', 0)} "
        f"(collection now {p.get('collection_size', '?')} records)"
    ]  # index and index-texts share it; the latter reports no updates
    lines += [f"  failed: {f.get('path', f.get('uri'))}: {f.get('error')}" for f in p.get("failures", [])]
    return "\n".join(lines)


OnDiskOpt = Annotated[
    bool | None,
    typer.Option(
        "--on-disk/--in-memory",
        help="IVF inverted lists in a memory-mapped file (default: on disk past BLIPSEARCH_INDEX_MEMORY_GB).",
    ),
]


@handle_errors
def index(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders (recursive), glob patterns ('photos/**/*.jpg'), file lists (.txt), "
            "CSV/Parquet manifests with a path column (other columns kept as metadata), "
            "WebDataset tar shards (.tar), brace lists ('shards/{00000..00099}.tar'), object URLs "
            "(s3://bucket/prefix, globs, lists, manifests; https:// lists and manifests), dataset folders "
            "(imagefolder, img2dataset output, save_to_disk) and Parquet/Arrow files of image bytes."
        ),
    ],
    collection: CollectionOpt,
    model: ModelOpt = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", min=1, help=f"Images per forward pass (default BLIPSEARCH_BATCH_SIZE, {BATCH_SIZE})."
        ),
    ] = None,
    shard_size: Annotated[
        int | None,
        typer.Option(
            "--shard-size", min=1, help=f"Records per committed shard (default BLIPSEARCH_SHARD_SIZE, {SHARD_SIZE})."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=1, help=f"Decode worker processes (default BLIPSEARCH_DECODE_WORKERS, {DECODE_WORKERS})."
        ),
    ] = None,
    decode: Annotated[
        str | None,
        typer.Option(
            "--decode", metavar="process|thread", help="Decode in worker processes or threads (default auto)."
        ),
    ] = None,
    precision: PrecisionOpt = None,
    input_format: Annotated[
        str,
        typer.Option(
            "--input-format",
            metavar="auto|files|list|manifest|webdataset|dataset|imagefolder|img2dataset",
            help="auto (by extension and content), files, list, manifest, webdataset, dataset, imagefolder "
            "or img2dataset.",
        ),
    ] = "auto",
    image_column: Annotated[
        str | None, typer.Option("--image-column", help="Dataset files: the column of image bytes (default: auto).")
    ] = None,
    allow_pipe: Annotated[
        bool,
        typer.Option(
            "--allow-pipe",
            help="Run 'pipe:COMMAND' inputs: COMMAND runs in a shell and its output is read as a tar shard.",
        ),
    ] = False,
    path_column: Annotated[
        str | None, typer.Option("--path-column", help="Manifest column holding image paths (default: auto).")
    ] = None,
    metadata_columns: Annotated[
        str | None,
        typer.Option("--metadata-columns", help="Comma-separated manifest columns to keep (default: all others)."),
    ] = None,
    runner: Annotated[
        str, typer.Option("--runner", metavar="local|ray", help="local (this machine) or ray (a Ray cluster).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster address (default: start a local Ray).")
    ] = None,
    index_spec: Annotated[
        str | None, typer.Option("--index-spec", help="FAISS index spec (default: chosen by size, see index-stats).")
    ] = None,
    on_disk: OnDiskOpt = None,
    cache_itm_features: Annotated[
        bool, typer.Option("--cache-itm-features", help="Store fp16 vision tokens for fast ITM re-ranking.")
    ] = False,
    captions: Annotated[
        bool, typer.Option("--captions", help="Caption each new image (caption + caption_model).")
    ] = False,
    caption_model: CaptionModelOpt = None,
    max_new_tokens: MaxTokensOpt = 30,
    num_beams: BeamsOpt = 1,
    prompt: PromptOpt = None,
    ocr: Annotated[
        bool,
        typer.Option(
            "--ocr", help="Read the text in each new image (OCR; searchable) and keep OCR on for the collection."
        ),
    ] = False,
    ocr_engine: Annotated[
        str | None,
        typer.Option(
            "--ocr-engine", metavar="rapidocr|tesseract", help="OCR engine (default BLIPSEARCH_OCR_ENGINE, rapidocr)."
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Index images into a collection (created on first use). Re-runs add only new images."""
    settings = settings_for(
        data_dir,
        batch_size=batch_size,
        shard_size=shard_size,
        decode_workers=workers,
        decode_mode=decode,
        precision=precision,
    )
    created = dir_config.is_new(settings.data_dir)
    check_hub_models(  # offline: fail before torch loads (an existing collection keeps its own model)
        (model or _existing_model(settings, collection) or settings.model, "model"),
        (caption_model or settings.caption_model if captions else None, "caption"),
    )
    from indexer.options import IndexOptions
    from models.captioners import Decoding
    from service.collections import open_collection
    from service.indexing import index_paths
    from service.models import load_captioner

    meta_cols = [c.strip() for c in metadata_columns.split(",") if c.strip()] if metadata_columns else None
    options = IndexOptions.from_settings(settings, runner=runner, address=address)
    options.check(captions=captions, cache_itm_features=cache_itm_features)  # before a captioner loads
    captioner = load_captioner(settings, caption_model) if captions else None
    decoding = Decoding(max_new_tokens=max_new_tokens, num_beams=num_beams, prompt=prompt)
    if captioner is not None:
        captioner.check_decoding(decoding)  # before any record is written
    report = index_paths(
        settings,
        paths,
        collection,
        options=options,
        model=model,
        cache_itm_features=cache_itm_features,
        captioner=captioner,
        decoding=decoding,
        input_format=input_format,
        path_column=path_column,
        metadata_columns=meta_cols,
        image_column=image_column,
        allow_pipe=allow_pipe,
        index_spec=index_spec,
        on_disk=on_disk,
        ocr=ocr,
        ocr_engine=ocr_engine,
    )
    if created:  # the new data dir remembers the models it was made with (blipsearch.toml)
        dir_config.remember(settings.data_dir, chosen_models(settings, model=model, caption_model=caption_model))
    payload = {
        "collection": report.collection,
        "added": report.added,
        "skipped_duplicates": report.skipped_duplicates,
        "failed": report.failed,
        "updated": report.updated,
        "removed_stale": report.removed_stale,
        "failures": report.failures,
        "ocr_failures": report.ocr_failures,
        "total": report.total,
        "collection_size": open_collection(settings, collection).manifest.count,
        "timings": report.timings,
    }
    emit(payload, as_json, lambda p: _human_report(p, paths))


@handle_errors
def index_texts(
    file: Annotated[Path, typer.Argument(help="CSV, JSONL or Parquet with columns id, text (+ metadata).")],
    collection: CollectionOpt,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Index texts into a text collection, for image→text search."""
    from service.indexing import index_texts as run

    payload = run(settings_for(data_dir), file, collection, model=model)
    emit(payload, as_json, _human_report)


@handle_errors
def reindex(
    collection: CollectionOpt,
    index_spec: Annotated[
        str | None, typer.Option("--index-spec", help="FAISS factory spec (default exact Flat).")
    ] = None,
    on_disk: OnDiskOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild the collection's FAISS index from its Parquet records."""
    from service.collections import reindex as run

    info = run(settings_for(data_dir), collection, index_spec, on_disk)
    payload = {"collection": collection, "index": json.loads(info.model_dump_json())}
    emit(
        payload,
        as_json,
        lambda p: (
            f"{collection}: rebuilt {info.spec} index with {info.ntotal} vectors"
            + (" (on disk)" if info.on_disk else "")
        ),
    )
