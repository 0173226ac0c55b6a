"""``blipsearch ocr``: read the text in image files, or backfill OCR over a whole collection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from blipsearch.errors import InvalidInputError
from cli.common import DataDirOpt, JsonOpt, emit, handle_errors, settings_for

OcrEngineOpt = Annotated[
    str | None, typer.Option("--ocr-engine", help="rapidocr (default, BLIPSEARCH_OCR_ENGINE) or tesseract.")
]


def _human(p: dict[str, Any]) -> str:
    lines = [
        f"{p['collection']}: read {p['read']} ({p['with_text']} with text, {p['gated']} skipped by the text gate), "
        f"failed {p['failed']}; job {p.get('job_id')}"
    ]
    lines += [f"  failed: id {f['id']}: {f['error']}" for f in p["failures"][:20]]
    return "\n".join(lines)


@handle_errors
def ocr(
    files: Annotated[list[Path] | None, typer.Argument(help="Images to read (omit with --collection).")] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Backfill OCR over this collection (and keep it on).")
    ] = None,
    ocr_engine: OcrEngineOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Read the text in image files, or OCR every record of a collection that has none from this engine.

    A collection backfill is a job (`blipsearch jobs list`): resumable (a re-run continues where a killed
    one stopped) and idempotent (a re-run with nothing left does nothing)."""
    from indexer.ocr import OcrOptions, OcrStage, image_array

    if bool(files) == bool(collection):
        raise InvalidInputError("Give image FILEs or --collection NAME (one of the two).")
    settings = settings_for(data_dir)
    options = OcrOptions.from_settings(settings, ocr_engine)
    stage = OcrStage(options)
    try:
        if collection:
            from indexer.ocr import ocr_collection
            from service.collections import open_collection
            from storage.catalog import open_catalog

            coll = open_collection(settings, collection)
            report = ocr_collection(
                coll,
                stage,
                open_catalog(settings.catalog_url()),
                max_pixels=settings.max_image_pixels,
                max_bytes=settings.max_file_bytes,
            )
            emit(report, as_json, _human)
            return
        from media.decode import decode_image, read_file

        results: list[dict[str, Any]] = []
        for f in files or []:
            try:
                dec = decode_image(read_file(f, settings.max_file_bytes).data, settings.max_image_pixels)
                res = stage.run(image_array(dec.image, options.limits.max_pixels), (dec.width, dec.height))
                results.append(
                    {
                        "path": str(f),
                        "text": res.text(options.min_confidence),
                        "lines": [ln.to_dict() for ln in res.lines],
                        "error": res.error,
                        "gated": res.gated,
                    }
                )
            except InvalidInputError as exc:
                results.append({"path": str(f), "text": None, "lines": [], "error": str(exc)})
        emit(
            {"ocr_engine": stage.name, "results": results},
            as_json,
            lambda p: "\n".join(
                f"{r['path']}: {r['text'] if r['error'] is None else 'ERROR ' + r['error']}" for r in p["results"]
            ),
        )
    finally:
        stage.close()
