"""The ``blipsearch`` command line. Command names, flags and JSON fields are a user contract."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from cli import (
    captioning,
    duplicates,
    families,
    help_types,
    importing,
    index_stats,
    indexing,
    maintenance,
    ocr,
    querying,
    reembedding,
    serving,
    sync,
)
from cli.backfill import backfill_metadata
from cli.common import PrecisionOpt
from cli.configuring import config_app
from cli.embedding import embed
from cli.evaluating import eval_app
from cli.jobs import jobs_app
from cli.keys import keys_app
from cli.mcp import mcp
from cli.moderating import moderate_app

help_types.install()  # `--collection TEXT`, not `--collection <str>`

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain help: no type column (`<bool>` on flags), brackets kept as written
    help="Multimodal image search on BLIP embeddings.",
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    precision: PrecisionOpt = None,
) -> None:
    if precision is not None:
        if precision not in ("exact", "fast"):
            raise typer.BadParameter("use 'exact' or 'fast'", param_hint="--precision")
        # Every command (and `serve`'s workers) builds its settings from the environment.
        os.environ["BLIPSEARCH_PRECISION"] = precision
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


app.command()(indexing.index)
app.command("index-texts")(indexing.index_texts)
app.command()(indexing.reindex)
app.command("index-stats")(index_stats.index_stats)
app.command()(reembedding.reembed)
app.command()(maintenance.delete)
app.command()(maintenance.compact)
app.command()(querying.search)
app.command()(querying.collections)
app.command()(captioning.caption)
app.command("backfill-metadata")(backfill_metadata)
app.command()(ocr.ocr)
app.command()(serving.serve)
app.command()(embed)
app.command("models")(families.models)
app.command()(mcp)
app.command("import-embeddings")(importing.import_embeddings)
app.command()(sync.sync)
app.command()(sync.watch)
app.command()(duplicates.duplicates)
app.add_typer(eval_app, name="eval")
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")
app.add_typer(moderate_app, name="moderate")
app.add_typer(config_app, name="config")


if __name__ == "__main__":  # pragma: no cover
    app()
