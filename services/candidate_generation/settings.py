"""Settings of candidate generation, read from ``RELKD_CANDIDATE_*`` environment variables.

Addresses (Kafka bootstrap, gRPC host and port) come from the shared
``services.core.settings.Settings``; this class holds only what is specific to
candidate generation. docs/candidate-generation.md lists every variable.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CandidateSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELKD_CANDIDATE_", extra="ignore")

    index_dir: Path = Field(
        Path(".relkd/candidate-index"),
        description="Saved catalog index the service loads at start-up and saves after updates.",
    )
    state_dir: Path = Field(
        Path(".relkd/candidate-state"),
        description="Batch-run state: the ledger of queries already published per index version.",
    )
    default_k: int = Field(100, ge=1, le=1000, description="Candidates `Generate` returns for k=0.")
    per_query: int = Field(
        32, ge=1, le=1000, description="Candidates per query for distillation sampling."
    )
    max_batch_queries: int = Field(
        1000, ge=1, description="Most queries one `GenerateBatch` request may carry."
    )
    sample_depth: int = Field(
        1000, ge=1, description="Fused-ranking depth that stratified sampling draws from."
    )
    seed: int = Field(0, description="Seed of the sampler and of synthetic query writing.")
    query_pool: Path | None = Field(
        None,
        description="Known queries the relabel consumer matches changed products against: a "
        "dataset directory (its queries table) or a query log (.jsonl or one query a line).",
    )
    relabel_group: str = Field(
        "candidate-generation", description="Consumer group of the relabel-request consumer."
    )
    queries_per_changed_product: int = Field(
        20, ge=0, description="Known queries, closest by embedding, that get a changed product."
    )
    requeue_pairs_per_hour: int = Field(
        20000,
        ge=1,
        description="Budget of the relabel backlog: most pairs re-queued for a new teacher in "
        "any hour (sliding window).",
    )
    requeue_interval_s: float = Field(
        30.0, gt=0, description="Seconds between drains of the relabel backlog."
    )
    served_group: str = Field(
        "candidate-generation-served",
        description="Consumer group that counts served pairs (relevance.served.v1) for the "
        "relabel backlog's priorities.",
    )
    upsert_max_products: int = Field(
        1000, ge=1, description="Most products one UpsertProducts call may carry."
    )
