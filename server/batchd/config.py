"""Settings: read once, from flags, environment (BATCHD_*) and an optional TOML file.

Precedence, highest first: explicit overrides (command-line flags), environment variables,
the TOML file named by ``BATCHD_CONFIG`` (or ``--config``), then the defaults below. The one
``Settings`` object is built at start-up and passed down; nothing reads the environment later.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from batchd import startup


class TableSettings(BaseModel):
    """Per-table overrides of the conventions (keyed by "schema.table")."""

    model_config = ConfigDict(extra="forbid")

    # None: the convention (a column named "version" / "deleted_at"); "": none.
    version_column: str | None = None
    soft_delete_column: str | None = None
    # Operation kinds allowed on the table; None: all of them.
    operations: list[str] | None = None


# admin | * | read:<schema.table pattern> | write:<schema.table pattern>
#   | call:<handler pattern> | call:<schema.function pattern>
_SCOPE = re.compile(r"admin|\*|(read|write):(\*|[^.]+\..+)|call:.+")


def check_scope(scope: str) -> str:
    """Return ``scope`` if it follows the grammar (see batchd.principals), else raise ValueError."""
    if not _SCOPE.fullmatch(scope):
        raise ValueError(f"bad scope {scope!r}: expected admin, *, read:SCHEMA.TABLE, "
                         "write:SCHEMA.TABLE (fnmatch patterns, e.g. read:public.*), "
                         "call:HANDLER or call:SCHEMA.FUNCTION")
    return scope


class TokenSettings(BaseModel):
    """A bearer token: only its SHA-256 is configured, never the token itself."""

    model_config = ConfigDict(extra="forbid")

    # Hex SHA-256 of the token's UTF-8 bytes (`batchd new-token` prints one).
    sha256: str
    # Who the caller is (logged, and named in PERMISSION_DENIED messages).
    principal: str
    scopes: list[str] = Field(default_factory=list)
    # The database role its batches and streams run as (SET LOCAL ROLE in each transaction), so
    # that PostgreSQL's GRANTs and row-level security apply; None: batchd's own login role.
    role: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("must be the 64 hex digits of the token's SHA-256")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        return [check_scope(s) for s in value]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHD_", extra="forbid")

    # --- network
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    max_message_bytes: int = 16 * 1024 * 1024
    # Let several processes listen on the same port (SO_REUSEPORT); set by `serve --workers`.
    reuse_port: bool = False

    # The same service over HTTP (batchd.http): Connect (JSON and binary), gRPC-Web and gRPC
    # on /batchd.v1.BatchService/*, the curl ingest on /v1/ingest/TABLE, and the console.
    # 0: no HTTP server. Plaintext, or TLS with the same tls_* files as gRPC.
    http_port: int = Field(8080, ge=0, le=65535)
    # Serve the browser console on /console of the HTTP server. None: only in the embedded demo
    # (no dsn), like demo_schema.
    console: bool | None = None
    # The curl ingest (batchd.http.ingest): the largest request body (0: no limit; the body is
    # streamed, never held whole), and how long the client may send nothing.
    http_max_body_bytes: int = Field(64 * 1024 ** 3, ge=0)
    http_idle_seconds: float = Field(60.0, gt=0)

    # --- observability (batchd.metrics, batchd.logs, batchd.rpc.tracing)
    # Prometheus /metrics on its own port; 0: no endpoint.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9464, ge=0, le=65535)
    # "json": one JSON object per line; "text": for people; "auto": text on a terminal, else JSON.
    log_format: Literal["auto", "json", "text"] = "auto"
    # OpenTelemetry spans for every RPC; needs the extra: pip install 'batchd[otel]'.
    otel_enabled: bool = False

    # --- database
    # None: start the embedded PostgreSQL in data_dir, with the demo schema.
    dsn: str | None = None
    data_dir: Path = Path(".batchd/pgdata")
    demo_schema: bool | None = None  # None: only with the embedded database
    pool_min_size: int = 2
    pool_max_size: int = 16
    # What is between batchd and PostgreSQL. "transaction": a pooler in transaction mode
    # (pgbouncer pool_mode=transaction), where a session's prepared statements do not survive
    # its transaction: asyncpg's statement cache is turned off. "none": a direct connection (or
    # a session-mode pooler). "auto": find out at start-up (batchd.db.pool.detect_pooler).
    pooler: Literal["auto", "none", "transaction"] = "auto"
    # Prepared statements kept per connection (when no transaction pooler is in between).
    statement_cache_size: int = 256
    # In force in every transaction batchd opens (SET LOCAL, so they hold through a pooler in
    # transaction mode, which refuses them as start-up parameters); 0: no limit. A call's
    # deadline lowers statement_timeout for its transaction.
    statement_timeout_ms: int = Field(30_000, ge=0)
    lock_timeout_ms: int = Field(10_000, ge=0)
    idle_in_transaction_timeout_ms: int = Field(60_000, ge=0)
    # Time to open a database connection before the attempt fails (UNAVAILABLE).
    connect_timeout_seconds: float = Field(10.0, gt=0)
    # The BatchService health entry turns NOT_SERVING when PostgreSQL has not answered a check
    # (every db_check_seconds) for db_unhealthy_after_seconds; SERVING again when it does.
    db_check_seconds: float = Field(1.0, gt=0)
    db_unhealthy_after_seconds: float = Field(5.0, gt=0)

    # --- what is exposed
    # Patterns "schema.table", "schema.*"; only matching tables can be used.
    expose: list[str] = Field(default_factory=lambda: ["public.*"])
    # Patterns "schema.function", "schema.*" of the SQL functions a "call" may name. None by
    # default: a function is code, and nothing runs unless the operator says so.
    expose_functions: list[str] = Field(default_factory=list)
    default_schema: str = "public"
    tables: dict[str, TableSettings] = Field(default_factory=dict)
    # Catalog reloads (batchd.reload): the DSN batchd LISTENs on for NOTIFY batchd, 'reload'
    # (None: the DSN, unless behind a transaction pooler, where LISTEN cannot work), and
    # whether to install an event trigger that notifies after every DDL (needs a superuser).
    notify_dsn: str | None = None
    reload_trigger: bool = False
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

    # --- idempotency (batchd.batch.idempotency): how long a BatchExecute request id and its stored
    # answer are kept, and how often expired ones are deleted.
    idempotency_ttl_seconds: float = Field(24 * 3600, gt=0)
    idempotency_cleanup_seconds: float = Field(60, gt=0)
    # Work running at once; beyond it, RESOURCE_EXHAUSTED with RetryInfo (never a queue). A
    # stream holds a pooled connection for its whole life: keep streams below pool_max_size.
    max_concurrent_batches: int = 256
    max_concurrent_streams: int = 8
    # Calls gRPC may hold before batchd's handlers take them (a burst of connections). Past it,
    # gRPC itself cancels calls (CANCELLED, unseen by batchd); below it, every call reaches
    # admission and is answered OK or RESOURCE_EXHAUSTED with RetryInfo. Each waiting call
    # costs its headers only (its message is read once a handler takes it).
    max_pending_calls: int = Field(50_000, gt=0)
    # A stream open longer is ended (ATOMIC: rolled back; INDEPENDENT: acked chunks stay).
    max_stream_seconds: float = 3600.0
    # A stream holds nothing (no admission slot, no connection) until its header arrives, and
    # is ended (DEADLINE_EXCEEDED) if none comes within stream_header_seconds, or if the client
    # sends nothing for stream_idle_seconds between messages: idle clients lock nobody out.
    stream_header_seconds: float = Field(10.0, gt=0)
    stream_idle_seconds: float = Field(60.0, gt=0)
    # The deadline of a BatchExecute whose caller set none (a caller's own deadline is not
    # raised to it), so that every call has a server-side bound.
    max_batch_seconds: float = Field(300.0, gt=0)

    # --- shutdown (batchd.app.App.stop). On SIGTERM health turns NOT_SERVING at once; batchd
    # keeps serving for drain_delay_seconds, so that load balancers and clients watching health
    # move away; then refuses new work (UNAVAILABLE before any header, which the published
    # retry policy retries on another replica) and lets work in flight finish within the grace
    # period (`serve --grace`). 0: no delay (a single server has nobody to hand work to); the
    # deployment files under deploy/ set it.
    drain_delay_seconds: float = Field(0.0, ge=0)

    # --- security (batchd.rpc.auth, batchd.principals). No tokens and no client CA:
    # authentication is off.
    tokens: list[TokenSettings] = Field(default_factory=list)
    # Reflection without credentials (it shows the published .proto, nothing of the database).
    reflection_public: bool = True
    # TLS: PEM files of the server's certificate chain and key; none: plaintext.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # mTLS: PEM of the CA that signs client certificates; a client must present one.
    tls_client_ca_file: Path | None = None
    # Scopes of client-certificate principals, by certificate subject CN.
    client_cert_scopes: dict[str, list[str]] = Field(default_factory=dict)
    # Database roles of client-certificate principals, by CN (see TokenSettings.role).
    client_cert_roles: dict[str, str] = Field(default_factory=dict)

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

    @field_validator("client_cert_scopes")
    @classmethod
    def _cert_scopes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {cn: [check_scope(s) for s in scopes] for cn, scopes in value.items()}

    @model_validator(mode="after")
    def _security(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        if self.client_cert_scopes and self.tls_client_ca_file is None:
            raise ValueError("client_cert_scopes needs tls_client_ca_file (mTLS)")
        hashes = [t.sha256 for t in self.tokens]
        if len(set(hashes)) != len(hashes):
            raise ValueError("tokens: the same sha256 is configured twice")
        return self

    @property
    def roles(self) -> set[str]:
        """Every database role a principal may run as."""
        return {t.role for t in self.tokens if t.role} | set(self.client_cert_roles.values())

    @property
    def auth_enabled(self) -> bool:
        """Authentication is on as soon as tokens or client certificates are configured."""
        return bool(self.tokens) or self.tls_client_ca_file is not None

    @property
    def embedded(self) -> bool:
        return self.dsn is None

    @property
    def wants_console(self) -> bool:
        return self.embedded if self.console is None else self.console

    @property
    def wants_demo_schema(self) -> bool:
        return self.embedded if self.demo_schema is None else self.demo_schema


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; ``overrides`` are flags given on the command line (None = unset).

    Every mistake is a ``StartupError`` of one line (batchd.startup): a settings file that is
    missing, unreadable or not TOML (its line and column), an unknown key (with the nearest
    known one), a value of the wrong type (the key, the value, and where it came from: the
    flag, the BATCHD_* variable, or the file and the key's line)."""
    if config_file is not None:
        os.environ["BATCHD_CONFIG"] = str(config_file)
    named = os.environ.get("BATCHD_CONFIG")
    path = Path(named) if named else None
    text, keys = None, set[str]()
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
            keys = set(tomllib.loads(text))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise startup.config_file_error(path, exc) from None
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise startup.settings_error(
            exc.errors(), fields=_fields_at, config_file=path, toml_text=text,
            toml_keys=keys, flags=given) from None


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The setting names known at ``loc``: the top level, a token's, a table's."""
    if loc[:1] == ("tokens",):
        return list(TokenSettings.model_fields)
    if loc[:1] == ("tables",) and len(loc) == 2:
        return list(TableSettings.model_fields)
    return list(Settings.model_fields) if not loc else []
