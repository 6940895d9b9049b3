"""The caller's deadline bounds the database work; a cancelled call stops it."""

from __future__ import annotations

import asyncio
import re
import time

import grpc
import pytest

from tests.support.batches import batch, count, rows


async def no_sleeping_backend(db, patience: float = 5.0) -> None:
    """Wait until no batchd backend is still running pg_sleep (the work really stopped)."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        busy = await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                                 "= 'batchd' AND state = 'active' AND query LIKE '%pg_sleep%'")
        if busy == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("a batchd backend is still sleeping")


def slow_batch():
    return batch([
        {"id": "c", "insert": {"table": "customers", "rows": [{"name": "s", "email": "s@x"}]}},
        {"id": "slow", "call": {"handler": "sleep", "args": {"seconds": 5}}},
    ])


async def test_deadline_becomes_the_statement_timeout(stub):
    response = await stub.BatchExecute(batch([
        {"id": "t", "call": {"handler": "statement_timeout"}}]), timeout=10)
    value = rows(response.results[0])[0]["value"]
    m = re.fullmatch(r"(\d+)ms", value)
    # gRPC rounds the grpc-timeout header up, so the server may see a little over 10 s.
    assert m and 5_000 < int(m.group(1)) <= 10_500, value
    unbounded = await stub.BatchExecute(batch([
        {"id": "t", "call": {"handler": "statement_timeout"}}]))
    assert rows(unbounded.results[0])[0]["value"] == "30s"  # the pool's default


async def test_deadline_stops_the_database_work_and_commits_nothing(stub, db):
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchExecute(slow_batch(), timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await no_sleeping_backend(db)
    assert time.monotonic() - started < 4.5  # stopped well before pg_sleep(5) would end
    assert await count(db, "customers") == 0


async def test_client_cancel_stops_the_database_work_and_commits_nothing(stub, db):
    call = stub.BatchExecute(slow_batch())
    for _ in range(100):  # until the sleep is running in PostgreSQL
        if await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                             "'batchd' AND state = 'active' AND query LIKE '%pg_sleep%'"):
            break
        await asyncio.sleep(0.02)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await no_sleeping_backend(db)
    assert await count(db, "customers") == 0


async def test_pooled_connections_carry_the_configured_timeouts(schema):
    from batchd.app import App
    from batchd.v1 import batch_pb2_grpc
    from tests.support.servers import make_settings

    app = await App.start(make_settings(schema, statement_timeout_ms=1234, lock_timeout_ms=567,
                                        idle_in_transaction_timeout_ms=8910))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            response = await stub.BatchExecute(batch([
                {"id": "s", "call": {"handler": "session_settings"}}]))
    finally:
        await app.stop(grace=1)
    assert rows(response.results[0])[0] == {
        "statement_timeout": "1234ms", "lock_timeout": "567ms",
        "idle_in_transaction_session_timeout": "8910ms", "application_name": "batchd"}
