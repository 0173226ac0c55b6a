"""``blipsearch embed``: ITC vectors of texts or images, as search computes its query vectors."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from blipsearch.errors import InvalidInputError
from cli.common import DataDirOpt, handle_errors, settings_for, write_output


@handle_errors
def embed(
    text: Annotated[list[str] | None, typer.Option("--text", help="Text to embed; repeatable.")] = None,
    image: Annotated[list[Path] | None, typer.Option("--image", help="Image file to embed; repeatable.")] = None,
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="Use this collection's model.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Hub id or local directory (default: the --collection's model, else BLIPSEARCH_MODEL)."
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", metavar="json|npy", help="json (default) or npy.")] = "json",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout (npy: a .npy file).")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print L2-normalised float32 embeddings, in input order: JSON like POST /v1/embed, or a
    .npy array of shape (n, dim), or (n, 32, dim) for BLIP-2 images."""
    import numpy as np

    from search.embedding import check_count, check_texts, payload, resolve_model
    from service.models import load_model

    if fmt not in ("json", "npy"):
        raise InvalidInputError(f"Unknown --format {fmt!r}: use json or npy.")
    if bool(text) == bool(image):
        raise InvalidInputError("Give --text T (repeatable) or --image FILE (repeatable), not both.")
    settings = settings_for(data_dir)
    limit = 1 << 30  # the CLI is not bounded like the API; the model batches internally
    if text:
        check_texts(text, limit)
    else:
        check_count(len(image or []), limit)
    images = []
    if image:
        from media.decode import read_image

        for path in image:
            images.append(read_image(path, settings.max_file_bytes, settings.max_image_pixels).image)
    embedder = load_model(settings, resolve_model(settings.data_dir, settings.model, collection, model))
    if text:
        vectors, kind = embedder.embed_texts(text), "text"
    else:
        vectors, kind = embedder.embed_images(images), "image"
    vectors = np.asarray(vectors, dtype=np.float32)
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, vectors)
        if output is not None:
            write_output(output, buf.getvalue())
        else:
            sys.stdout.buffer.write(buf.getvalue())
            sys.stdout.buffer.flush()
        return
    out = json.dumps(payload(embedder, vectors, kind))
    if output is not None:
        write_output(output, out + "\n")
    else:
        typer.echo(out)
