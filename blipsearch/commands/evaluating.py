"""``blipsearch eval retrieval``: TR/IR recall and MRR under the BLIP / LAVIS protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from blipsearch.cli_common import JsonOpt, ModelOpt, emit, handle_errors, settings_for

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate retrieval quality on labelled data.")


@eval_app.command("retrieval")
@handle_errors
def retrieval(
    annotations: Annotated[Path, typer.Option("--annotations", help="Karpathy JSON, or JSONL of {image, captions[]}.")],
    images: Annotated[Path, typer.Option("--images", help="Image root folder.")],
    split: Annotated[str, typer.Option("--split", help="Split to evaluate ('' for all).")] = "test",
    k_test: Annotated[int, typer.Option("--k-test", min=1, help="Candidates re-ranked by ITM per query.")] = 128,
    index_spec: Annotated[str, typer.Option("--index-spec", help="FAISS spec for the ITC ranking.")] = "Flat",
    no_itm: Annotated[bool, typer.Option("--no-itm", help="ITC only (skip the ITM re-rank).")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Evaluate the first N images only.")] = None,
    model: ModelOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the JSON result here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """TR@1/5/10, IR@1/5/10, their mean and MRR: ITC only, and ITC + ITM re-rank (LAVIS fusion)."""
    import json

    from evaluation.data import load_annotations
    from evaluation.retrieval import evaluate, format_table
    from models import load_itm
    from search.service import load_model

    settings = settings_for(None)
    data = load_annotations(annotations, images, split or None, limit)
    embedder = load_model(settings, model or settings.model)
    if not no_itm and not embedder.has_itm:  # CLIP, SigLIP, ALIGN: the ITC stage only
        typer.echo(f"note: the {embedder.family} model has no ITM head; evaluating the ITC stage only", err=True)
    scorer = None if no_itm or not embedder.has_itm else load_itm(embedder, first_token=settings.itm_first_token)
    result = evaluate(embedder, data, scorer=scorer, k_test=k_test, index_spec=index_spec)
    if output:
        output.write_text(json.dumps(result, indent=2))
    emit(result, as_json, format_table)
