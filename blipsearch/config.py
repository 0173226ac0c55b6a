"""Settings, read from ``BLIPSEARCH_*`` environment variables (and CLI flags at the edge)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "Salesforce/blip-itm-base-coco"
DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLIPSEARCH_", extra="ignore")

    data_dir: Path = Field(default=Path("./blipsearch-data"), description="Root of all collections.")
    model: str = Field(default=DEFAULT_MODEL, description="Hub id or local directory of the ITC model.")
    caption_model: str = Field(default=DEFAULT_CAPTION_MODEL, description="Hub id or local dir of the captioner.")
    caption_batch_size: int = Field(default=16, ge=1, le=1024)
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the catalog; default: SQLite in the data dir."
    )
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    dtype: str = Field(default="auto", description="'auto' (bf16/fp16 on CUDA, fp32 on CPU), 'fp32', 'fp16', 'bf16'.")
    batch_size: int = Field(default=32, ge=1, le=4096)
    shard_size: int = Field(default=4096, ge=1, description="Records per committed Parquet shard.")
    decode_workers: int = Field(default=4, ge=1)
    max_image_pixels: int = Field(default=100_000_000, ge=1, description="Decompression-bomb guard.")
    max_file_bytes: int = Field(default=256 * 1024 * 1024, ge=1, description="Larger files are skipped.")
    max_upload_bytes: int = Field(default=32 * 1024 * 1024, ge=1, description="API upload size limit.")
    itm_first_token: str = Field(default="enc", pattern="^(enc|cls)$", description="BLIP ITM first token.")
    itm_batch_size: int = Field(default=32, ge=1, description="Pairs per ITM forward pass.")
    itm_cache_items: int = Field(default=512, ge=0, description="Hot images kept in the ITM feature LRU.")

    def catalog_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'catalog.db').resolve()}"


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit (non-None) overrides from the caller."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)  # type: ignore[arg-type]
