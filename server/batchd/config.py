"""Settings: read once, from flags, environment (BATCHD_*) and an optional TOML file.

Precedence, highest first: explicit overrides (command-line flags), environment variables,
the TOML file named by ``BATCHD_CONFIG`` (or ``--config``), then the defaults below. The one
``Settings`` object is built at start-up and passed down; nothing reads the environment later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class TableSettings(BaseModel):
    """Per-table overrides of the conventions (keyed by "schema.table")."""

    # None: the convention (a column named "version" / "deleted_at"); "": none.
    version_column: str | None = None
    soft_delete_column: str | None = None
    # Operation kinds allowed on the table; None: all of them.
    operations: list[str] | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHD_", extra="forbid")

    # --- network
    host: str = "127.0.0.1"
    port: int = 50051
    max_message_bytes: int = 16 * 1024 * 1024

    # --- database
    # None: start the embedded PostgreSQL in data_dir, with the demo schema.
    dsn: str | None = None
    data_dir: Path = Path(".batchd/pgdata")
    demo_schema: bool | None = None  # None: only with the embedded database
    pool_min_size: int = 2
    pool_max_size: int = 16
    # 0 behind pgbouncer in transaction mode.
    statement_cache_size: int = 256
    statement_timeout_ms: int = 30_000
    lock_timeout_ms: int = 10_000
    idle_in_transaction_timeout_ms: int = 60_000

    # --- what is exposed
    # Patterns "schema.table", "schema.*"; only matching tables can be used.
    expose: list[str] = Field(default_factory=lambda: ["public.*"])
    default_schema: str = "public"
    tables: dict[str, TableSettings] = Field(default_factory=dict)
    # Modules imported at start-up whose @handler functions become "call" operations.
    handler_modules: list[str] = Field(default_factory=list)

    # --- limits
    max_operations: int = 1000
    max_rows_per_batch: int = 100_000
    max_page_size: int = 10_000
    # Concurrent operations of one INDEPENDENT batch (each holds a pooled connection).
    independent_concurrency: int = 8
    # Extra attempts of an ATOMIC batch after 40001 / 40P01.
    atomic_retries: int = 3
    # Chunks a stream decodes ahead of the one being written (memory: chunk size x this + 2).
    stream_read_ahead: int = 2

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("BATCHD_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def embedded(self) -> bool:
        return self.dsn is None

    @property
    def wants_demo_schema(self) -> bool:
        return self.embedded if self.demo_schema is None else self.demo_schema


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; ``overrides`` are flags given on the command line (None = unset)."""
    if config_file is not None:
        os.environ["BATCHD_CONFIG"] = str(config_file)
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
