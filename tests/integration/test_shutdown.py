"""SIGTERM on a real `batchd serve` process with a batch in flight."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from batchd.v1 import batch_pb2_grpc
from tests.support.batches import no_open_transaction
from tests.support.locks import LOCK, blocked_batch, waiters
from tests.support.servers import serving


async def test_sigterm_drains_and_the_batch_in_flight_commits(schema, db):
    async with serving(schema, grace=30) as (proc, channel):
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        await db.execute("SELECT pg_advisory_lock($1)", LOCK)
        try:
            in_flight = asyncio.ensure_future(stub.BatchExecute(blocked_batch("kept@x")))
            await waiters(db, 1)
            proc.send_signal(signal.SIGTERM)
            for _ in range(200):
                status = (await health.Check(health_pb2.HealthCheckRequest())).status
                if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.02)
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.BatchExecute(blocked_batch("refused@x"))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await db.execute("SELECT pg_advisory_unlock($1)", LOCK)
        assert (await in_flight).committed
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert [r["email"] for r in await db.fetch("SELECT email FROM customers")] == ["kept@x"]


async def test_sigterm_rolls_back_what_outlives_the_grace_period(schema, db):
    async with serving(schema, grace=0.5) as (proc, channel):
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        await db.execute("SELECT pg_advisory_lock($1)", LOCK)
        try:
            in_flight = asyncio.ensure_future(stub.BatchExecute(blocked_batch("lost@x")))
            await waiters(db, 1)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            with pytest.raises(grpc.aio.AioRpcError):
                await in_flight
        finally:
            await db.execute("SELECT pg_advisory_unlock($1)", LOCK)
    assert await db.fetchval("SELECT count(*) FROM customers") == 0


async def test_a_second_signal_exits_at_once_without_committing(schema, db):
    async with serving(schema, grace=60) as (proc, channel):
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        await db.execute("SELECT pg_advisory_lock($1)", LOCK)
        try:
            in_flight = asyncio.ensure_future(stub.BatchExecute(blocked_batch("gone@x")))
            await waiters(db, 1)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 1
            with pytest.raises(grpc.aio.AioRpcError):
                await in_flight
        finally:
            await db.execute("SELECT pg_advisory_unlock($1)", LOCK)
    await no_open_transaction(db)  # PostgreSQL saw the dead connection and rolled back
    assert await db.fetchval("SELECT count(*) FROM customers") == 0
