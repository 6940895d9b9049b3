"""Idle clients lock nobody out: a stream holds an admission slot (and a connection) only from
a valid header on, and one that sends no header, or goes quiet, is ended and frees its slot."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from batchd.app import App
from batchd.v1 import batch_pb2_grpc
from tests.support.servers import make_settings
from tests.support.streams import COMMIT, ended_with, events, header, open_stream, rows_chunk, send


@pytest.fixture
async def strict_app(schema):
    app = await App.start(make_settings(schema, max_concurrent_streams=2,
                                        stream_header_seconds=2, stream_idle_seconds=2))
    yield app
    await app.stop(grace=1)


async def test_streams_without_a_header_hold_no_slot_and_are_ended(strict_app, db):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{strict_app.port}") as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        idle = [stub.BatchStream() for _ in range(200)]
        await asyncio.gather(*(call.wait_for_connection() for call in idle))
        # Far more silent streams than slots, and a well-behaved stream still gets in.
        call, _ = await open_stream(stub, header(table="events"))
        assert (await send(call, rows_chunk(1, events(0, 10)))).ack.rows_written == 10
        assert (await send(call, COMMIT)).summary.committed
        ends = await asyncio.gather(*(ended_with(c) for c in idle))
    assert set(ends) == {(grpc.StatusCode.DEADLINE_EXCEEDED, "STREAM_IDLE")}
    assert await db.fetchval("SELECT count(*) FROM events") == 10


async def test_a_stream_gone_quiet_after_its_header_is_ended_and_frees_its_slot(strict_app, db):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{strict_app.port}") as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        quiet = [(await open_stream(stub, header(table="events", mode="MODE_INDEPENDENT")))[0]
                 for _ in range(2)]
        await send(quiet[0], rows_chunk(1, events(0, 5)))  # acked: stays committed
        # Both slots are held: a third stream is refused with RESOURCE_EXHAUSTED.
        refused = stub.BatchStream()
        await refused.write(header(table="events"))
        assert await ended_with(refused) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                             "TOO_MANY_CONCURRENT")
        for call in quiet:
            assert await ended_with(call) == (grpc.StatusCode.DEADLINE_EXCEEDED, "STREAM_IDLE")
        # Their slots are free again.
        call, _ = await open_stream(stub, header(table="events"))
        await send(call, rows_chunk(1, events(100, 3)))
        assert (await send(call, COMMIT)).summary.committed
    assert await db.fetchval("SELECT count(*) FROM events") == 8

