"""The caller's deadline bounds the database work; a cancelled call stops it."""

from __future__ import annotations

import asyncio
import re
import time

import grpc
import pytest

from tests.conftest import batch, count, rows


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
