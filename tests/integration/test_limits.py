"""Limits and draining: refuse clearly (with RetryInfo) instead of queueing without bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from batchd.app import App
from batchd.v1 import batch_pb2_grpc
from tests.support.batches import count, no_open_transaction
from tests.support.locks import LOCK, blocked_batch, waiters
from tests.support.servers import make_settings
from tests.support.streams import COMMIT, header, open_stream, rows_chunk, send


@asynccontextmanager
async def server(schema: str, **settings: object,
                 ) -> AsyncIterator[tuple[App, batch_pb2_grpc.BatchServiceStub]]:
    app = await App.start(make_settings(schema, **settings))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        yield app, batch_pb2_grpc.BatchServiceStub(channel)
    finally:
        await channel.close()
        await app.stop(grace=0)


def retry_info(err: grpc.aio.AioRpcError) -> error_details_pb2.RetryInfo:
    status = rpc_status.from_call(err)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no RetryInfo")


async def test_batches_beyond_the_limit_are_refused_with_retry_info(schema, db):
    async with server(schema, max_concurrent_batches=2) as (_, stub):
        await db.execute("SELECT pg_advisory_lock($1)", LOCK)
        try:
            running = [asyncio.ensure_future(stub.BatchExecute(blocked_batch(f"{i}@x")))
                       for i in range(2)]
            await waiters(db, 2)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.BatchExecute(blocked_batch("third@x"))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit is 2" in caught.value.details()
            assert retry_info(caught.value).retry_delay.seconds == 1
        finally:
            await db.execute("SELECT pg_advisory_unlock($1)", LOCK)
        assert all(response.committed for response in await asyncio.gather(*running))
        assert (await stub.BatchExecute(blocked_batch("after@x"))).committed
        assert await count(db, "customers") == 3


async def test_streams_beyond_the_limit_are_refused(schema, db):
    async with server(schema, max_concurrent_streams=1) as (_, stub):
        first, _ = await open_stream(stub, header(table="events"))
        second = stub.BatchStream()
        await second.write(header(table="events"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await second.read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await send(first, rows_chunk(1, [{"id": "1", "kind": "k", "score": 1}]))
        assert (await send(first, COMMIT)).summary.committed
        for _ in range(50):  # the slot frees as the server finishes the first stream
            try:
                third, _ = await open_stream(stub, header(table="events"))
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the stream slot was never released")
        third.cancel()


async def test_a_stream_open_too_long_is_ended_and_rolled_back(schema, db):
    async with server(schema, max_stream_seconds=0.5) as (_, stub):
        call, _ = await open_stream(stub, header(table="events"))
        await send(call, rows_chunk(1, [{"id": "1", "kind": "k", "score": 1}]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()  # no commit comes
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "max_stream_seconds" in caught.value.details()
    assert await count(db, "events") == 0


async def test_draining_refuses_new_work_and_lets_work_in_flight_finish(schema, db):
    app = await App.start(make_settings(schema))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    stub = batch_pb2_grpc.BatchServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    await db.execute("SELECT pg_advisory_lock($1)", LOCK)
    try:
        in_flight = asyncio.ensure_future(stub.BatchExecute(blocked_batch("flight@x")))
        await waiters(db, 1)
        stopping = asyncio.ensure_future(app.stop(grace=30))
        for _ in range(100):
            reply = await health.Check(health_pb2.HealthCheckRequest())
            if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.02)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.BatchExecute(blocked_batch("new@x"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in caught.value.details()
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", LOCK)
    assert (await in_flight).committed
    await stopping
    await channel.close()
    assert [r["email"] for r in await db.fetch("SELECT email FROM customers")] == ["flight@x"]


async def test_work_still_running_after_the_grace_period_is_rolled_back(schema, db):
    app = await App.start(make_settings(schema))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    stub = batch_pb2_grpc.BatchServiceStub(channel)
    await db.execute("SELECT pg_advisory_lock($1)", LOCK)
    try:
        in_flight = asyncio.ensure_future(stub.BatchExecute(blocked_batch("late@x")))
        await waiters(db, 1)
        await app.stop(grace=0.3)
        with pytest.raises(grpc.aio.AioRpcError):
            await in_flight
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", LOCK)
        await channel.close()
    await no_open_transaction(db)  # the cancelled transaction's rollback is done
    assert await count(db, "customers") == 0
