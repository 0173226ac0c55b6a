"""Defaults and limits shared by settings, options objects, the CLI, the API schemas and the docs:
each is written here once and referenced everywhere else."""

from __future__ import annotations

MAX_IMAGE_PIXELS = 100_000_000  # decompression-bomb guard (BLIPSEARCH_MAX_IMAGE_PIXELS)
MAX_FILE_BYTES = 256 * 1024 * 1024  # larger files are skipped (BLIPSEARCH_MAX_FILE_BYTES)
DECODE_TIMEOUT_S = 60.0  # one file's decode, beside the pixel budget (BLIPSEARCH_DECODE_TIMEOUT_S)
MAX_UPLOAD_BYTES = 32 * 1024 * 1024  # one uploaded file (BLIPSEARCH_MAX_UPLOAD_BYTES)
BATCH_SIZE = 32  # images per forward pass (BLIPSEARCH_BATCH_SIZE)
SHARD_SIZE = 4096  # records per committed Parquet shard (BLIPSEARCH_SHARD_SIZE)
DECODE_WORKERS = 4  # decode worker processes or threads (BLIPSEARCH_DECODE_WORKERS)
CAPTION_BATCH_SIZE = 16  # images per captioning forward pass (BLIPSEARCH_CAPTION_BATCH_SIZE)
CAPTION_COMMIT_EVERY = 64  # captions per committed column rewrite (``caption --collection``)

# -- queries (search/limits.py re-exports the query limits) --
MAX_REFINE_K = 4096  # exact re-rank depth of compressed indexes, per call (refine_k)
DEFAULT_REFINE_K = 100  # BLIPSEARCH_REFINE_K's default
SHARD_TIMEOUT_S = 10.0  # a query waits this long for each index shard (BLIPSEARCH_SHARD_TIMEOUT_S)
DEDUP_THRESHOLD = 0.94  # clip-retrieval's deduplicate cosine cut-off (clip_back uses the same)
KNN_MAX_RESULTS = 10_000  # clip-retrieval's num_result_ids cap (BLIPSEARCH_CLIP_RETRIEVAL_MAX_RESULTS)
MAX_QUERY_PARTS = 32  # weighted parts (texts, images, records, vectors) in one query
MAX_FEEDBACK_IDS = 64  # positive_ids + negative_ids in one query (--like / --unlike)
MAX_PART_WEIGHT = 100.0  # largest |weight| of one query part (0, NaN and infinities are refused)
NO_MATCH_THRESHOLD = 0.5  # ITM P(match) a re-ranked result must reach (BLIPSEARCH_NO_MATCH_THRESHOLD)

# -- index choice --
FLAT_MAX_VECTORS = 1_000_000  # largest exact (Flat) index chosen automatically
TARGET_RECALL = 0.95  # recall@10 the default nprobe / efSearch aim at

# -- models --
ITM_BATCH_SIZE = 32  # image-text pairs per ITM forward pass (BLIPSEARCH_ITM_BATCH_SIZE)
ITM_CACHE_ITEMS = 512  # hot images kept in the ITM feature LRU (BLIPSEARCH_ITM_CACHE_ITEMS)
MICROBATCH_MAX_SIZE = 32  # queries per batched encode (BLIPSEARCH_MICROBATCH_MAX_SIZE)
MICROBATCH_WAIT_MS = 3.0  # a batch waits this long for more queries (BLIPSEARCH_MICROBATCH_WAIT_MS)
MAX_QUEUE = 256  # queued query encodes before 503 (BLIPSEARCH_MAX_QUEUE)

# -- object stores --
OBJECT_TIMEOUT_S = 30.0  # connect and read timeouts of each request (BLIPSEARCH_OBJECT_TIMEOUT_S)
OBJECT_RETRIES = 3  # attempts after the first on transient errors (BLIPSEARCH_OBJECT_RETRIES)

# -- text in images (OCR) --
OCR_MIN_CONFIDENCE = 0.5  # lines under this are stored but not searchable
OCR_GATE_THRESHOLD = 0.002  # text-presence score to run detection at
OCR_REC_BATCH = 16  # text crops per recognition batch
OCR_MAX_SIDE = 1536  # the detector's input side (per tile)
OCR_MAX_REGIONS = 500  # text regions recognised per image (the largest first)
OCR_TIME_BUDGET_S = 20.0  # OCR time bound per image
