"""Settings: CLI flags at the edge, then ``BLIPSEARCH_*`` environment variables, then the data
dir's own ``blipsearch.toml`` (blipsearch/dir_config.py), then the defaults here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from blipsearch import limits

DEFAULT_MODEL = "Salesforce/blip-itm-base-coco"
DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLIPSEARCH_", extra="ignore")

    data_dir: Path = Field(default=Path("./blipsearch-data"), description="Root of all collections.")
    model: str = Field(default=DEFAULT_MODEL, description="Hub id or local directory of the ITC model.")
    caption_model: str = Field(default=DEFAULT_CAPTION_MODEL, description="Hub id or local dir of the captioner.")
    caption_batch_size: int = Field(default=limits.CAPTION_BATCH_SIZE, ge=1, le=1024)
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the catalog; default: SQLite in the data dir."
    )
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    dtype: str = Field(default="auto", description="'auto' (bf16/fp16 on CUDA, fp32 on CPU), 'fp32', 'fp16', 'bf16'.")
    batch_size: int = Field(default=limits.BATCH_SIZE, ge=1, le=4096)
    shard_size: int = Field(default=limits.SHARD_SIZE, ge=1, description="Records per committed Parquet shard.")
    decode_workers: int = Field(
        default=limits.DECODE_WORKERS, ge=1, description="Decode worker processes (or threads)."
    )
    decode_mode: str = Field(
        default="auto",
        pattern="^(auto|process|thread)$",
        description="Decode in worker processes or threads; auto: processes for jobs of 512+ images on 4+ cores.",
    )
    index_memory_gb: float = Field(default=16.0, gt=0, description="Memory budget for automatic index choice.")
    flat_max_vectors: int = Field(
        default=limits.FLAT_MAX_VECTORS, ge=1, description="Largest exact (Flat) index chosen automatically."
    )
    target_recall: float = Field(
        default=limits.TARGET_RECALL, gt=0, le=1, description="recall@10 the default nprobe/efSearch aims at."
    )
    max_image_pixels: int = Field(default=limits.MAX_IMAGE_PIXELS, ge=1, description="Decompression-bomb guard.")
    max_file_bytes: int = Field(default=limits.MAX_FILE_BYTES, ge=1, description="Larger files are skipped.")
    decode_timeout_s: float = Field(
        default=limits.DECODE_TIMEOUT_S,
        gt=0,
        le=3600,
        description="Time limit of one file's decode.",
    )
    jpeg_draft: bool = Field(
        default=True, description="Decode large JPEGs at reduced scale (DCT), never below the model's input size."
    )
    pdq_hashes: bool = Field(
        default=True,
        description="PDQ-hash every indexed image (when pdqhash is installed); hashing needs the full decode, so "
        "JPEG draft decoding applies only with this off.",
    )
    # `duplicates` tiers (search/duplicates.py): ITC cosine similarities, PDQ bits, seconds
    duplicate_reencoded_similarity: float = Field(
        default=0.97, ge=0, le=1, description="Re-encoded/resized tier: ITC similarity at least this (and PDQ close)."
    )
    duplicate_pdq_distance: int = Field(
        default=31, ge=0, le=256, description="Re-encoded/resized tier: PDQ Hamming distance at most this (of 256)."
    )
    duplicate_near_similarity: float = Field(
        default=0.93, ge=0, le=1, description="Near-duplicate tier: ITC similarity at least this."
    )
    duplicate_burst_seconds: float = Field(
        default=10.0, ge=0, description="Burst tier: shots taken at most this many seconds apart (taken_at)."
    )
    duplicate_burst_similarity: float = Field(
        default=0.85, ge=0, le=1, description="Burst tier: ITC similarity at least this."
    )
    max_upload_bytes: int = Field(default=limits.MAX_UPLOAD_BYTES, ge=1, description="API upload size limit.")
    itm_first_token: str = Field(default="enc", pattern="^(enc|cls)$", description="BLIP ITM first token.")
    itm_batch_size: int = Field(default=limits.ITM_BATCH_SIZE, ge=1, description="Pairs per ITM forward pass.")
    itm_cache_items: int = Field(
        default=limits.ITM_CACHE_ITEMS, ge=0, description="Hot images kept in the ITM feature LRU."
    )
    model_idle_s: float | None = Field(
        default=None,
        gt=0,
        description="Free a loaded model's memory after this many seconds unused (the next request loads it "
        "again). Default: keep models loaded.",
    )

    policy_dir: Path | None = Field(
        default=None, description="Moderation policies served by name (default: DATA_DIR/policies)."
    )
    # -- HTTP API -------------------------------------------------------------------------
    read_access: str = Field(
        default="public", pattern="^(public|key)$", description="'public' reads, or reads need a key too."
    )
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins (JSON list); none.")
    import_roots: list[Path] = Field(
        default_factory=list, description="Server folders POST /v1/jobs/index may read (JSON list); none by default."
    )
    import_prefixes: list[str] = Field(
        default_factory=list,
        description="Object-store prefixes POST /v1/jobs/index may read (s3://bucket/prefix); object URLs listed "
        "in BLIPSEARCH_IMPORT_ROOTS land here.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="Endpoint of an S3-compatible store (MinIO, Ceph, R2); default: AWS."
    )
    object_timeout_s: float = Field(
        default=limits.OBJECT_TIMEOUT_S, gt=0, le=600, description="Object-store connect/read timeout."
    )
    object_retries: int = Field(
        default=limits.OBJECT_RETRIES, ge=0, le=20, description="Retries (with back-off) of a failed object read."
    )
    allowed_models: list[str] = Field(
        default_factory=list, description="Models POST /v1/collections may use besides BLIPSEARCH_MODEL (JSON list)."
    )
    microbatch: bool = Field(default=True, description="Batch concurrent query encodes into one forward pass.")
    microbatch_max_size: int = Field(
        default=limits.MICROBATCH_MAX_SIZE, ge=1, le=1024, description="Queries per batched forward pass."
    )
    microbatch_wait_ms: float = Field(
        default=limits.MICROBATCH_WAIT_MS, ge=0, le=1000, description="Wait for more queries this long."
    )
    max_queue: int = Field(default=limits.MAX_QUEUE, ge=1, description="Queued query encodes before answering 503.")
    max_upload_files: int = Field(default=64, ge=1, description="Files per upload request.")

    # -- sharded serving on Ray Serve (blipsearch serve --runner ray) --
    shard_timeout_s: float = Field(
        default=limits.SHARD_TIMEOUT_S,
        gt=0,
        le=600,
        description="Seconds a query waits for each index shard to answer.",
    )
    shard_partial: bool = Field(
        default=False,
        description="When a shard does not answer in time: answer with the other shards' results, flagged "
        "partial (response fields partial / missing_shards), instead of 503.",
    )
    ray_shard_cpus: float = Field(default=1.0, ge=0, description="CPUs Ray reserves for each shard replica.")
    ray_router_cpus: float = Field(default=1.0, ge=0, description="CPUs Ray reserves for each router replica.")

    # -- POST /v1/embed and the clip-retrieval back-end protocol --
    embed_max_items: int = Field(default=64, ge=1, le=4096, description="Texts or images per POST /v1/embed.")
    clip_retrieval_api: bool = Field(
        default=True, description="Serve clip-retrieval's /knn-service, /indices-list and /metadata."
    )
    clip_retrieval_max_results: int = Field(
        default=limits.KNN_MAX_RESULTS,
        ge=1,
        le=100_000,
        description="Cap on num_result_ids (larger requests are cut to it).",
    )
    clip_retrieval_dedup_threshold: float = Field(
        default=limits.DEDUP_THRESHOLD,
        ge=0,
        le=1,
        description="deduplicate: cosine at or above which a lower result is dropped.",
    )

    no_match_threshold: float = Field(
        default=limits.NO_MATCH_THRESHOLD,
        ge=0,
        le=1,
        description="ITM P(match) a re-ranked result must reach, else the answer says no_confident_match.",
    )

    # -- per-request bounds: body bytes (any framing), decodes at once, pixels per request --
    max_request_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1,
        description="Bytes read from one request body, whatever its framing (chunked too): 413 past it.",
    )
    max_inflight_body_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1,
        description="Bytes of request bodies held at once by all requests (memory + spooled temp files): 503 past it.",
    )
    max_inflight_body_bytes_per_client: int | None = Field(
        default=None,
        ge=1,
        description="Bytes of request bodies one client (API key, else address) holds at once: 503 past it "
        "(default: a quarter of BLIPSEARCH_MAX_INFLIGHT_BODY_BYTES, at least one request's limit).",
    )
    min_body_rate: int = Field(
        default=64 * 1024,
        ge=0,
        description="Bytes per second a request body must arrive at on average, after the grace time: 408 "
        "below it, and its share of the in-flight budget is freed (0: no minimum).",
    )
    body_rate_grace_s: float = Field(
        default=10.0, gt=0, description="Seconds a request body may take before BLIPSEARCH_MIN_BODY_RATE applies."
    )
    max_concurrent_decodes: int = Field(
        default=2, ge=1, description="Uploads decoded at once by the API (off the event loop); others wait."
    )
    max_request_pixels: int = Field(
        default=200_000_000,
        ge=1,
        description="Pixels of all images in one request (on top of the per-image limit): 413 past it.",
    )

    # -- small-shard merging (storage/merging.py) --
    merge_small_shards: bool = Field(
        default=True, description="Merge the small shards that upload commits leave (storage/merging.py)."
    )
    small_shard_rows: int = Field(default=1024, ge=2, description="Shards with fewer rows are merged.")
    merge_fanin: int = Field(default=8, ge=2, description="Small shards piled up at the tail before they merge.")

    # -- re-rank cost: depth for callers without a write key, candidates in flight --
    public_rerank_depth: int = Field(
        default=128,
        ge=1,
        description="Most candidates re-ranked (max of k and rerank_k) for callers without a write key.",
    )
    rerank_budget: int = Field(
        default=2048, ge=1, description="ITM re-rank candidates in flight across all requests: 503 past it."
    )

    # -- captioning and visual-question models: refused before loading when memory cannot hold them --
    model_memory_check: bool = Field(
        default=True, description="Refuse captioning/VQA checkpoints too large for free memory, before loading."
    )
    model_memory_headroom: float = Field(
        default=1.2, ge=1.0, le=10.0, description="Parameter bytes × this must fit in free memory."
    )

    # -- BLIP text pre-processing of queries and ITM texts --
    text_preprocess: str = Field(
        default="blip",
        pattern="^(blip|none)$",
        description="BLIP-family query and ITM texts: 'blip' (BLIP's pre_caption) or 'none' (as given).",
    )

    # -- server paths hidden from API clients --
    expose_paths: bool = Field(
        default=False,
        description="Show absolute server paths in API record uris, job failures, messages and /readyz "
        "(default: relative to an import root or the data dir, else the file name).",
    )

    # -- precision modes (models/precision.py) --
    precision: str = Field(
        default="fast",
        pattern="^(exact|fast)$",
        description="'exact': fp32 and full image decodes, equal to the transformers forward. 'fast': bf16 where "
        "the CPU has native bf16 (fp32 elsewhere; bf16/fp16 on CUDA) and JPEG draft decoding, within the "
        "fidelity bound of scripts/bench/fidelity.py.",
    )

    # -- exact re-rank (refine) of compressed indexes --
    refine_k: int = Field(
        default=limits.DEFAULT_REFINE_K,
        ge=0,
        le=limits.MAX_REFINE_K,
        description="Compressed (PQ/SQ) indexes: default shortlist re-scored exactly from the records' stored "
        "vectors, then cut to k (0 or 1: off). nprobe is tuned with it at build; per call: --refine-k / refine_k.",
    )

    # -- the runtime of the fast mode (models/fast_runtime.py) --
    fast_runtime: str = Field(
        default="auto",
        pattern="^(auto|torch|openvino)$",
        description="What runs BLIP's image and text stages in 'fast' mode: 'auto' (OpenVINO with the bf16 hint "
        "on a CPU with native bf16 when the [openvino] extra is installed, else torch), 'torch' (bf16 autocast "
        "where native), or 'openvino'. 'exact' never uses OpenVINO.",
    )
    runtime_cache_dir: Path | None = Field(
        default=None, description="Where converted OpenVINO models are cached (default: DATA_DIR/cache/openvino)."
    )

    # -- peers' protocols (docs/protocols.md): each can be switched off --
    openai_api: bool = Field(default=True, description="Serve OpenAI's POST /v1/embeddings and /v1/moderations.")
    openai_moderation_policy: str | None = Field(
        default=None, description="Policy POST /v1/moderations uses when the request names none (model)."
    )
    immich_api: bool = Field(default=True, description="Serve Immich's machine-learning API (/ping, /predict).")
    immich_models: dict[str, str] = Field(
        default_factory=dict,
        description="Immich modelName -> blipsearch model id or collection (JSON object); other names must be "
        "a collection, BLIPSEARCH_MODEL or one of BLIPSEARCH_ALLOWED_MODELS.",
    )
    weaviate_api: bool = Field(
        default=True, description="Serve Weaviate's multi2vec-clip inference API (/vectorize, /meta, /.well-known)."
    )
    mcp_api: bool = Field(default=True, description="Allow `blipsearch mcp` (the MCP server for AI agents).")
    weaviate_model: str | None = Field(
        default=None, description="Model id or collection /vectorize embeds with (default: BLIPSEARCH_MODEL)."
    )
    # -- text in images (OCR) --
    ocr_engine: str = Field(
        default="rapidocr", pattern="^(rapidocr|tesseract)$", description="OCR engine: 'rapidocr' or 'tesseract'."
    )
    ocr_min_confidence: float = Field(
        default=limits.OCR_MIN_CONFIDENCE,
        ge=0,
        le=1,
        description="OCR lines under this confidence are stored but not searchable.",
    )
    ocr_workers: int = Field(default=1, ge=1, le=64, description="OCR worker threads (their own pool).")
    ocr_threads: int = Field(default=1, ge=1, le=64, description="ONNX Runtime threads per OCR worker.")
    ocr_rec_batch: int = Field(
        default=limits.OCR_REC_BATCH, ge=1, le=256, description="Text crops per recognition batch."
    )
    ocr_gate: bool = Field(default=True, description="Skip detection where the text-presence score says no text.")
    ocr_gate_threshold: float = Field(
        default=limits.OCR_GATE_THRESHOLD, ge=0, le=1, description="Text-presence score to run OCR at."
    )
    ocr_max_pixels: int = Field(default=8_000_000, ge=10_000, description="OCR input is downscaled to this.")
    ocr_max_side: int = Field(
        default=limits.OCR_MAX_SIDE, ge=64, le=8192, description="Detector input side (per tile)."
    )
    ocr_max_regions: int = Field(
        default=limits.OCR_MAX_REGIONS, ge=1, le=100_000, description="Text regions recognised per image."
    )
    ocr_time_budget_s: float = Field(
        default=limits.OCR_TIME_BUDGET_S, gt=0, le=3600, description="OCR time bound per image."
    )

    @model_validator(mode="before")
    @classmethod
    def _split_object_roots(cls, data: Any) -> Any:
        """Object URLs in ``import_roots`` (``s3://bucket/prefix``) are object-store prefixes."""
        roots = data.get("import_roots") if isinstance(data, dict) else None
        if isinstance(roots, list) and any(isinstance(r, str) and "://" in r for r in roots):
            urls = [r for r in roots if isinstance(r, str) and "://" in r]
            data = {**data, "import_roots": [r for r in roots if r not in urls]}
            data["import_prefixes"] = [*(data.get("import_prefixes") or []), *urls]
        return data

    def openvino_cache_dir(self) -> Path:
        return self.runtime_cache_dir or self.data_dir / "cache" / "openvino"

    def decode_draft(self) -> bool:
        """JPEG draft decoding is part of ``fast`` only: ``exact`` always decodes in full."""
        return self.jpeg_draft and self.precision == "fast"

    def catalog_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'catalog.db').resolve()}"


def get_settings(**overrides: object) -> Settings:
    """Settings from explicit (non-None) overrides of the caller (flags), else the environment,
    else the data dir's own file (``DATA_DIR/blipsearch.toml``: blipsearch/dir_config.py), else
    the built-in defaults."""
    import re

    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from blipsearch import dir_config
    from blipsearch.errors import ConfigError

    clean = {k: v for k, v in overrides.items() if v is not None}
    data_dir = dir_config.data_dir_from_env(clean.get("data_dir"))  # type: ignore[arg-type]
    path = dir_config.config_path(data_dir)
    from_file = {
        k: v
        for k, v in dir_config.read_config(data_dir, Settings.model_fields).items()
        if k not in clean and not dir_config.set_in_env(k)
    }
    try:
        return Settings(**{**from_file, **clean})
    except ValidationError as exc:  # a bad BLIPSEARCH_* value: one line, not a traceback

        def where(loc: tuple[int | str, ...]) -> str:
            key = str(loc[0]) if loc else ""
            if key in from_file:
                return f"{path}: {'.'.join(str(p) for p in loc)}"
            return f"BLIPSEARCH_{'_'.join(str(p) for p in loc).upper()}"

        bad = "; ".join(f"{where(tuple(e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"Invalid setting(s): {bad}.") from None
    except SettingsError as exc:  # a list or mapping setting that is not valid JSON
        field = re.search(r'field "([^"]+)"', str(exc))
        name = f"BLIPSEARCH_{field.group(1).upper()}" if field else "a BLIPSEARCH_* list setting"
        raise ConfigError(
            f"Invalid setting(s): {name}: not valid JSON; write a list as JSON, "
            f'e.g. {name}=\'["/srv/photos", "s3://bucket/prefix"]\'.'
        ) from None
