"""Settings of the data area, read from ``RELKD_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DataSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELKD_", extra="ignore")

    wands_queries: Path = Field(
        Path("../shared/data/wands/query.csv"),
        description="WANDS query.csv (tab-separated: query_id, query, query_class). When it "
        "exists the simulator draws query lengths from these real shopper queries; the "
        "platform works without it.",
    )
    download_dir: Path = Field(
        Path(".relkd/downloads"),
        description="Where `relkd data download` stores the raw WANDS / ESCI files.",
    )
