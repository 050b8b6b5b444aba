"""Settings of the label store, read from ``RELKD_LABEL_STORE_*`` environment variables.

Addresses (Kafka bootstrap, gRPC host and port) come from the shared
``services.core.settings.Settings``; this class holds only what is specific to the
label store. docs/label-store.md describes the store.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LabelStoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELKD_LABEL_STORE_", extra="ignore")

    dir: Path = Field(
        Path(".relkd/label-store"),
        description="Label store directory: incoming shards and immutable snapshots (a "
        "PersistentVolume in Kubernetes). Trainers read snapshots from here.",
    )
    group: str = Field(
        "label-store",
        description="Consumer group of relevance.labels.v1; the product changes of "
        "relevance.relabel-requests.v1 are consumed as `<group>-products`.",
    )
    snapshot_min_rows: int = Field(
        5000,
        ge=1,
        description="Cut a snapshot once this many label and product rows arrived since the "
        "last one.",
    )
    snapshot_max_age_s: float = Field(
        300.0,
        gt=0,
        description="Cut a snapshot once the oldest row not in a snapshot is this old, "
        "however few rows arrived.",
    )
    check_interval_s: float = Field(
        2.0, gt=0, description="How often the service checks the snapshot thresholds."
    )
