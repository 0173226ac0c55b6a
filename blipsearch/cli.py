"""The ``blipsearch`` command line. Command names, flags and JSON fields are a user contract."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from blipsearch.config import Settings, get_settings
from blipsearch.errors import BlipsearchError, InvalidInputError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Multimodal image search on BLIP embeddings.")
F = TypeVar("F", bound=Callable[..., Any])

CollectionOpt = Annotated[str, typer.Option("--collection", "-c", help="Collection name.")]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Hub id or local directory (default: the collection's model, else BLIPSEARCH_MODEL)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (BLIPSEARCH_DATA_DIR).")]


def emit(payload: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], str]) -> None:
    if as_json:
        typer.echo(json.dumps(payload, ensure_ascii=False, default=str))
    else:
        typer.echo(human(payload))


def handle_errors(fn: F) -> F:
    """Map domain errors to a one-line message (or a JSON error) and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BlipsearchError as err:
            if kwargs.get("as_json"):
                typer.echo(json.dumps({"error": {"code": err.code, "message": str(err)}}))
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; committed shards are kept, re-run the command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def settings_for(data_dir: Path | None, **extra: Any) -> Settings:
    return get_settings(data_dir=data_dir, **extra)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
@handle_errors
def index(
    paths: Annotated[list[Path], typer.Argument(help="Image files and folders (recursive).")],
    collection: CollectionOpt,
    model: ModelOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = None,
    shard_size: Annotated[int | None, typer.Option("--shard-size", min=1, help="Records per committed shard.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Decode threads.")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Index images into a collection (created on first use). Re-runs add only new images."""
    from indexer.job import index_paths

    settings = settings_for(data_dir, batch_size=batch_size, shard_size=shard_size, decode_workers=workers)
    report = index_paths(settings, paths, collection, model=model, progress=True)
    from storage.collection import Collection

    payload = {
        "collection": report.collection,
        "added": report.added,
        "skipped_duplicates": report.skipped_duplicates,
        "failed": report.failed,
        "failures": report.failures,
        "total": report.total,
        "collection_size": Collection.open(settings.data_dir, collection).manifest.count,
        "timings": report.timings,
    }

    def human(p: dict[str, Any]) -> str:
        lines = [
            f"{p['collection']}: added {p['added']}, duplicates {p['skipped_duplicates']}, "
            f"failed {p['failed']} (collection now {p['collection_size']} images)"
        ]
        lines += [f"  failed: {f['path']}: {f['error']}" for f in p["failures"]]
        return "\n".join(lines)

    emit(payload, as_json, human)


@app.command()
@handle_errors
def search(
    collection: CollectionOpt,
    text: Annotated[str | None, typer.Argument(help="Text query.")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Query image file (image→image).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="Number of results.")] = 10,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a collection by text, or by example image with --image."""
    from indexer.job import load_model
    from search.engine import SearchEngine
    from storage.collection import Collection

    if (text is None) == (image is None):
        raise InvalidInputError("Give either a TEXT query or --image FILE (not both).")
    settings = settings_for(data_dir)
    coll = Collection.open(settings.data_dir, collection)
    engine = SearchEngine.open(coll, load_model(settings, model or coll.manifest.model_id))
    if image is not None:
        from indexer.decode import decode_image, read_file

        raw = read_file(image, settings.max_file_bytes)
        hits = engine.search_image(decode_image(raw.data, settings.max_image_pixels).image, k)
    else:
        hits = engine.search_text(text or "", k)
    payload = {
        "collection": collection,
        "query": text if image is None else str(image),
        "results": [{"id": h.id, "uri": h.uri, "score": h.score, "caption": h.caption} for h in hits],
        "timing_ms": engine.timing_ms,
    }

    def human(p: dict[str, Any]) -> str:
        if not p["results"]:
            return "no results (the collection is empty)"
        return "\n".join(f"{r['score']:+.4f}  #{r['id']:<8} {r['uri']}" for r in p["results"])

    emit(payload, as_json, human)


@app.command()
@handle_errors
def collections(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """List collections with their model and size."""
    from storage.catalog import open_catalog
    from storage.collection import Collection

    settings = settings_for(data_dir)
    rows = []
    for row in open_catalog(settings.catalog_url()).list_collections():
        if not Collection.exists(settings.data_dir, row.name):
            continue
        m = Collection.open(settings.data_dir, row.name).manifest
        rows.append(
            {
                "name": row.name,
                "kind": m.kind,
                "count": m.count,
                "model_id": m.model_id,
                "dim": m.dim,
                "vectors_per_item": m.vectors_per_item,
                "index": m.index.spec if m.index else None,
                "created_at": m.created_at.isoformat(),
            }
        )

    def human(p: dict[str, Any]) -> str:
        if not p["collections"]:
            return "no collections yet: blipsearch index PATH --collection NAME"
        return "\n".join(f"{c['name']:<24} {c['count']:>9} images  {c['model_id']}" for c in p["collections"])

    emit({"collections": rows}, as_json, human)


@app.command()
@handle_errors
def reindex(
    collection: CollectionOpt,
    index_spec: Annotated[
        str | None, typer.Option("--index-spec", help="FAISS factory spec (default exact Flat).")
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild the collection's FAISS index from its Parquet records."""
    from search import index_store
    from storage.collection import Collection

    settings = settings_for(data_dir)
    coll = Collection.open(settings.data_dir, collection)
    info = index_store.refresh(coll, rebuild=True, spec=index_spec)
    payload = {"collection": collection, "index": json.loads(info.model_dump_json())}
    emit(payload, as_json, lambda p: f"{collection}: rebuilt {info.spec} index with {info.ntotal} vectors")


if __name__ == "__main__":  # pragma: no cover
    app()
