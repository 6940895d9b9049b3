"""Every client of a call refused on its metadata sees UNAUTHENTICATED, whatever the RPC's
shape: grpc.aio (Python) clients that were still writing a request stream when the refusal
came once saw INTERNAL "Internal error from Core" instead, for about half of such calls
(grpc/grpc#36066; ``batchd.rpc.auth.let_the_client_finish`` says why, and what the server does).

Each test makes 200 refused calls on one channel, a bad token and no token alternating; one
after the other where the race is (calls made together leave the server slower to answer, and
hide it)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from batchd.app import App
from batchd.config import TokenSettings
from batchd.principals import hash_token
from batchd.rpc.auth import REFUSED_MOST_SECONDS
from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.support.servers import make_settings

CALLS = 200
GOOD = "refusals-secret"
Call = Callable[[grpc.aio.Channel, tuple[tuple[str, str], ...] | None],
                Awaitable[grpc.StatusCode]]


@pytest.fixture(scope="module")
async def channel(schema: str) -> AsyncIterator[grpc.aio.Channel]:
    app = await App.start(make_settings(
        schema, reflection_public=False,
        tokens=[TokenSettings(sha256=hash_token(GOOD), principal="ops", scopes=["admin"])]))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
            yield ch
    finally:
        await app.stop(grace=1)


async def codes_of(channel: grpc.aio.Channel, call: Call, at_once: int) -> dict[str, int]:
    """The status codes of CALLS refused calls (no token, or an unknown one), ``at_once`` at a
    time, by name."""
    slots = asyncio.Semaphore(at_once)

    async def one(i: int) -> str:
        metadata = (("authorization", "Bearer not-configured"),) if i % 2 else None
        async with slots:
            return (await call(channel, metadata)).name

    return dict(collections.Counter(await asyncio.gather(*(one(i) for i in range(CALLS)))))


STREAM_HEADER = batch_pb2.BatchStreamRequest(header=batch_pb2.StreamHeader(table="events"))
STREAM_CHUNK = batch_pb2.BatchStreamRequest(chunk=batch_pb2.StreamChunk(sequence=1))


async def unary(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] | None,
                ) -> grpc.StatusCode:
    stub = batch_pb2_grpc.BatchServiceStub(channel)
    try:
        await stub.BatchExecute(batch_pb2.BatchExecuteRequest(), metadata=metadata)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def stream_written_ahead(channel: grpc.aio.Channel,
                               metadata: tuple[tuple[str, str], ...] | None,
                               ) -> grpc.StatusCode:
    """A header and two chunks written at once and the half-close, as a client that does not
    wait for StreamOpened would; then the call's status."""
    call = batch_pb2_grpc.BatchServiceStub(channel).BatchStream(metadata=metadata)
    try:
        for request in (STREAM_HEADER, STREAM_CHUNK, STREAM_CHUNK):
            await call.write(request)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):  # the call has ended
        pass
    return await call.code()


async def stream_waiting_for_opened(channel: grpc.aio.Channel,
                                    metadata: tuple[tuple[str, str], ...] | None,
                                    ) -> grpc.StatusCode:
    """The header, then a wait for the answer (StreamOpened), as clients should."""
    call = batch_pb2_grpc.BatchServiceStub(channel).BatchStream(metadata=metadata)
    try:
        await call.write(STREAM_HEADER)
        await call.read()
    except grpc.aio.AioRpcError:
        pass
    return await call.code()


async def reflection(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] | None,
                     ) -> grpc.StatusCode:
    """Three questions from an iterator, as grpc.aio sends a request iterator."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")] * 3), metadata=metadata)
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


# A client waiting for an answer raced nothing; the server waits a moment for its next message
# (REFUSED_QUIET_SECONDS) before answering, so these calls go together.
@pytest.mark.parametrize(("call", "at_once"), [
    (unary, 1), (stream_written_ahead, 1), (reflection, 1), (stream_waiting_for_opened, 20)])
async def test_every_refused_call_is_unauthenticated_for_a_grpc_aio_client(channel, call,
                                                                           at_once):
    assert await codes_of(channel, call, at_once) == {"UNAUTHENTICATED": CALLS}


async def test_a_refused_client_that_never_stops_writing_is_cut_off(channel):
    """The server reads a refused stream for REFUSED_MOST_SECONDS at most: a caller without
    credentials cannot hold a call open by writing on (such a writer may then see grpc.aio's
    INTERNAL: the one case left to grpc/grpc#36066)."""
    call = batch_pb2_grpc.BatchServiceStub(channel).BatchStream()
    async with asyncio.timeout(REFUSED_MOST_SECONDS + 10):
        try:
            await call.write(STREAM_HEADER)
            while True:
                await call.write(STREAM_CHUNK)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass
        assert await call.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INTERNAL)


BAD_STREAM_ID = batch_pb2.BatchStreamRequest(header=batch_pb2.StreamHeader(
    table="events", stream_id="not a valid id!"))


async def stream_refused_after_its_header(channel: grpc.aio.Channel,
                                          metadata: tuple[tuple[str, str], ...] | None,
                                          ) -> grpc.StatusCode:
    """A stream the service itself refuses once it has read the header (its stream id is
    malformed), while the client writes its chunks ahead and half-closes."""
    call = batch_pb2_grpc.BatchServiceStub(channel).BatchStream(
        metadata=(("authorization", f"Bearer {GOOD}"),))
    try:
        for request in (BAD_STREAM_ID, STREAM_CHUNK, STREAM_CHUNK):
            await call.write(request)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):  # the call has ended
        pass
    return await call.code()


async def test_a_stream_the_service_refuses_is_seen_with_its_code_by_a_grpc_aio_client(
        channel):
    """The same race as a refusal on metadata, for every error a BatchStream ends with while
    the client may still be writing (a bad header, a refused table, a draining server): the
    service reads what the client still sends before it answers."""
    assert await codes_of(channel, stream_refused_after_its_header, 1) == \
        {"INVALID_ARGUMENT": CALLS}
