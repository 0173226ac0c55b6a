"""``blipsearch caption``: caption files, or (re)caption a whole collection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from blipsearch.errors import InvalidInputError
from cli.common import DataDirOpt, JsonOpt, check_hub_models, emit, handle_errors, settings_for

CaptionModelOpt = Annotated[
    str | None, typer.Option("--caption-model", help="Hub id or local dir (BLIPSEARCH_CAPTION_MODEL).")
]
MaxTokensOpt = Annotated[int, typer.Option("--max-new-tokens", min=1, max=512, help="Caption length limit.")]
BeamsOpt = Annotated[int, typer.Option("--num-beams", min=1, max=16, help="1 = greedy; more = beam search.")]
PromptOpt = Annotated[
    str | None,
    typer.Option(
        "--prompt",
        help='BLIP/BLIP-2: prefix to continue, e.g. "a photography of"; InstructBLIP/LLaVA: the instruction.',
    ),
]


def _human_report(p: dict[str, Any]) -> str:
    return f"{p['collection']}: captioned {p['captioned']}, failed {p['failed']}"


@handle_errors
def caption(
    files: Annotated[list[Path] | None, typer.Argument(help="Images to caption (omit with --collection).")] = None,
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="(Re)caption this collection.")] = None,
    caption_model: CaptionModelOpt = None,
    max_new_tokens: MaxTokensOpt = 30,
    num_beams: BeamsOpt = 1,
    prompt: PromptOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Caption image files, or every record of a collection lacking a caption from this model
    (a resumable job: see `blipsearch jobs list`)."""
    if bool(files) == bool(collection):
        raise InvalidInputError("Give image FILEs or --collection NAME (one of the two).")
    settings = settings_for(data_dir)
    check_hub_models((caption_model or settings.caption_model, "caption"))  # offline: fail before torch loads
    from models.captioners import Decoding
    from service.models import load_captioner

    captioner = load_captioner(settings, caption_model)
    decoding = Decoding(max_new_tokens=max_new_tokens, num_beams=num_beams, prompt=prompt)
    captioner.check_decoding(decoding)
    if collection:
        from service.captioning import caption_collection

        report = caption_collection(settings, collection, captioner, decoding)
        emit(report, as_json, _human_report)
        return
    from media.decode import read_image

    results: list[dict[str, Any]] = []
    for f in files or []:
        try:
            img = read_image(f, settings.max_file_bytes, settings.max_image_pixels).image
            results.append({"path": str(f), "caption": captioner.caption([img], decoding)[0]})
        except InvalidInputError as exc:
            results.append({"path": str(f), "caption": None, "error": str(exc)})
    emit(
        {"caption_model": captioner.model_id, "results": results},
        as_json,
        lambda p: "\n".join(f"{r['path']}: {r['caption'] or 'ERROR ' + r.get('error', '')}" for r in p["results"]),
    )
