"""Defaults and limits shared by settings, options objects, the CLI, the API schemas and the docs:
each is written here once and referenced everywhere else."""

from __future__ import annotations

MAX_IMAGE_PIXELS = 100_000_000  # decompression-bomb guard (BLIPSEARCH_MAX_IMAGE_PIXELS)
MAX_FILE_BYTES = 256 * 1024 * 1024  # larger files are skipped (BLIPSEARCH_MAX_FILE_BYTES)
MAX_UPLOAD_BYTES = 32 * 1024 * 1024  # one uploaded file (BLIPSEARCH_MAX_UPLOAD_BYTES)
BATCH_SIZE = 32  # images per forward pass (BLIPSEARCH_BATCH_SIZE)
SHARD_SIZE = 4096  # records per committed Parquet shard (BLIPSEARCH_SHARD_SIZE)
DECODE_WORKERS = 4  # decode worker processes or threads (BLIPSEARCH_DECODE_WORKERS)
CAPTION_BATCH_SIZE = 16  # images per captioning forward pass (BLIPSEARCH_CAPTION_BATCH_SIZE)
CAPTION_COMMIT_EVERY = 64  # captions per committed column rewrite (``caption --collection``)
