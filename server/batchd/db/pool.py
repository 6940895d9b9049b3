"""The connection pool, and what every pooled connection is set up with.

Every connection carries ``statement_timeout``, ``lock_timeout`` and
``idle_in_transaction_session_timeout``, so a vanished client never holds locks for long, and
json/jsonb codecs that speak Python structures. ``statement_cache_size`` is configurable: 0
behind pgbouncer in transaction mode, where prepared statements do not survive.
"""

from __future__ import annotations

import json
from importlib import resources

import asyncpg

from batchd import pgtypes
from batchd.config import Settings
from batchd.values import dumps_json


async def _init_connection(conn: asyncpg.Connection) -> None:
    await pgtypes.install(conn)
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=dumps_json, decoder=json.loads,
                                  schema="pg_catalog")


async def create_pool(dsn: str, settings: Settings) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        statement_cache_size=settings.statement_cache_size,
        init=_init_connection,
        server_settings={
            "application_name": "batchd",
            "statement_timeout": str(settings.statement_timeout_ms),
            "lock_timeout": str(settings.lock_timeout_ms),
            "idle_in_transaction_session_timeout": str(settings.idle_in_transaction_timeout_ms),
        },
    )
    assert pool is not None
    return pool


DDL_LOCK = 0x62617463  # "batc": serializes batchd's own DDL across processes and replicas


async def run_ddl(pool: asyncpg.Pool, sql: str) -> None:
    """Run idempotent DDL (CREATE ... IF NOT EXISTS) under an advisory lock: two processes
    creating the same table at once would otherwise collide in the catalog."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", DDL_LOCK)
        await conn.execute(sql)


async def apply_demo_schema(pool: asyncpg.Pool) -> None:
    await run_ddl(pool, resources.files("batchd.demo").joinpath("schema.sql").read_text())
