"""``blipsearch eval retrieval``: TR/IR recall and MRR under the BLIP / LAVIS protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from blipsearch.errors import InvalidInputError
from cli.common import JsonOpt, emit, handle_errors, settings_for, write_output

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate retrieval quality on labelled data.")


@eval_app.command("retrieval")
@handle_errors
def retrieval(
    annotations: Annotated[
        Path,
        typer.Option(
            "--annotations",
            help="BLIP/LAVIS annotation list (coco_karpathy_test.json, flickr30k_test.json), Karpathy "
            "dataset_*.json, or JSONL of {image, captions[]}; detected by content.",
        ),
    ],
    images: Annotated[Path, typer.Option("--images", help="Image root folder.")],
    split: Annotated[str, typer.Option("--split", help="Split to evaluate ('' for all).")] = "test",
    k_test: Annotated[int, typer.Option("--k-test", min=1, help="Candidates re-ranked by ITM per query.")] = 128,
    index_spec: Annotated[str, typer.Option("--index-spec", help="FAISS spec for the ITC ranking.")] = "Flat",
    no_itm: Annotated[bool, typer.Option("--no-itm", help="ITC only (skip the ITM re-rank).")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Evaluate the first N images only.")] = None,
    max_words: Annotated[
        int, typer.Option("--max-words", min=1, help="Caption words kept by BLIP's pre_caption (BLIP: 30).")
    ] = 30,
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            metavar="exact|fast",
            help="exact: fp32 and full JPEG decode (the reference computation); fast: the settings' "
            "dtype and JPEG draft decoding.",
        ),
    ] = "exact",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Model to evaluate: hub id or local directory (default: BLIPSEARCH_MODEL, or the data dir's).",
        ),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the JSON result here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """TR@1/5/10, IR@1/5/10, their mean and MRR: ITC only, and ITC + ITM re-rank (LAVIS fusion).

    BLIP and BLIP-2 captions get BLIP's pre_caption (unless BLIPSEARCH_TEXT_PREPROCESS=none); other
    families' captions reach their tokenizers as written. The run is exact
    (fp32, full decode) unless --precision fast. --json also carries LAVIS's key names."""
    import json

    from evaluation.data import load_annotations
    from evaluation.retrieval import evaluate, format_table
    from models.families import text_preprocess_for
    from service.models import load_model, load_scorer

    if precision not in ("exact", "fast"):
        raise InvalidInputError(f"--precision must be 'exact' or 'fast' (got {precision!r}).")
    settings = settings_for(None)
    data = load_annotations(annotations, images, split or None, limit)
    # evaluate() pre-processes the captions itself (--max-words), so the model takes them as given.
    load_as = {"text_preprocess": "none", "precision": precision} | ({"dtype": "fp32"} if precision == "exact" else {})
    embedder = load_model(settings.model_copy(update=load_as), model or settings.model)
    if not no_itm and not embedder.has_itm:  # CLIP, SigLIP, ALIGN: the ITC stage only
        typer.echo(f"note: the {embedder.family} model has no ITM head; evaluating the ITC stage only", err=True)
    scorer = None if no_itm or not embedder.has_itm else load_scorer(settings, embedder)
    draft = embedder.input_size if precision == "fast" and settings.jpeg_draft else None
    result = evaluate(
        embedder,
        data,
        scorer=scorer,
        k_test=k_test,
        index_spec=index_spec,
        text_preprocess=text_preprocess_for(embedder.family, settings.text_preprocess),  # BLIP families only
        max_words=max_words,
        draft=draft,
    )
    if output:
        write_output(output, json.dumps(result, indent=2))
    emit(result, as_json, format_table)
