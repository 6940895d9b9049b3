"""Messages batchd cannot parse are INVALID_ARGUMENT naming the problem, never UNKNOWN, and
leave no traceback in the log: batchd decodes requests itself (batchd.rpc.decode)."""

from __future__ import annotations

import logging

import grpc
import pytest

from batchd.v1 import batch_pb2
from tests.support.streams import header


def nested(depth: int) -> dict:
    value: dict = {"x": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


def deep_request(depth: int) -> bytes:
    request = batch_pb2.BatchExecuteRequest()
    op = request.operations.add(id="o")
    op.call.handler = "echo"
    op.call.args.update(nested(depth))
    return request.SerializeToString()


def raw(channel: grpc.aio.Channel, method: str, stream: bool = False):
    make = channel.stream_stream if stream else channel.unary_unary
    return make(f"/batchd.v1.BatchService/{method}", request_serializer=lambda b: b,
                response_deserializer=lambda b: b)


@pytest.mark.parametrize("body", [deep_request(45), b"\x0a\xff\xff\xff\xff\x0f", b"\xff"],
                         ids=["nested-45-deep", "truncated", "garbage"])
async def test_unparsable_batch_is_invalid_argument_without_traceback(channel, body, caplog,
                                                                      db):
    caplog.set_level(logging.WARNING)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(channel, "BatchExecute")(body)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid batchd.v1.BatchExecuteRequest" in caught.value.details()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_deep_values_within_the_limit_still_work(stub):
    from tests.support.batches import batch
    response = await stub.BatchExecute(batch([
        {"id": "o", "call": {"handler": "echo", "args": nested(20)}}]))
    assert response.committed


async def test_unparsable_stream_message_ends_the_stream_with_invalid_argument(channel, caplog,
                                                                             db):
    caplog.set_level(logging.WARNING)
    call = raw(channel, "BatchStream", stream=True)()
    await call.write(header(table="events").SerializeToString())
    await call.read()  # opened
    await call.write(b"\xff\xff")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid batchd.v1.BatchStreamRequest" in caught.value.details()
    assert await db.fetchval("SELECT count(*) FROM events") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_unparsable_schema_request_is_invalid_argument(channel):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(channel, "GetSchema")(b"\xff")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
