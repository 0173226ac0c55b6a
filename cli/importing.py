"""``blipsearch import-embeddings``: bring embeddings computed elsewhere (clip-retrieval's
clip_inference output, plain .npy + Parquet, Parquet vector columns) into a collection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import CollectionOpt, DataDirOpt, JsonOpt, emit, handle_errors, settings_for


@handle_errors
def import_embeddings(
    collection: CollectionOpt,
    embeddings: Annotated[
        Path,
        typer.Option(
            "--embeddings",
            help="clip_inference output folder (img_emb/*.npy, metadata/*.parquet), a folder of .npy files, "
            "or Parquet files with a vector column.",
        ),
    ],
    model: Annotated[str, typer.Option("--model", help="The model that computed the embeddings (required).")],
    metadata: Annotated[
        Path | None, typer.Option("--metadata", help="Parquet metadata aligned row by row with the .npy files.")
    ] = None,
    path_column: Annotated[
        str | None, typer.Option("--path-column", help="Metadata column with each image's uri (default: auto).")
    ] = None,
    vector_column: Annotated[
        str | None, typer.Option("--vector-column", help="Parquet column holding the vectors (default: auto).")
    ] = None,
    sample: Annotated[int, typer.Option("--sample", min=1, help="Images re-embedded to check the model.")] = 16,
    min_cosine: Annotated[
        float, typer.Option("--min-cosine", min=-1.0, max=1.0, help="Refuse below this cosine on any sample.")
    ] = 0.95,
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="Import even when no sampled uri resolves to an image.")
    ] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import precomputed image embeddings after checking they come from --model."""
    from indexer.importing import ImportOptions
    from service.importing import import_precomputed

    settings = settings_for(data_dir)
    options = ImportOptions(
        path_column=path_column,
        vector_column=vector_column,
        sample=sample,
        min_cosine=min_cosine,
        allow_unverified=allow_unverified,
        shard_size=settings.shard_size,
        max_bytes=settings.max_file_bytes,
        max_pixels=settings.max_image_pixels,
        decode_timeout_s=settings.decode_timeout_s,
    )
    out = import_precomputed(settings, collection, embeddings, metadata, model, options)
    check = out["check"]
    emit(
        out,
        as_json,
        lambda p: (
            f"imported {p['added']} of {p['rows']} rows into {p['collection']} "
            f"({p['skipped_duplicates']} already there; checked {check.get('checked', 0)} images"
            + (f", min cosine {check['min_cosine']:.4f})" if check.get("checked") else ")")
        ),
    )
