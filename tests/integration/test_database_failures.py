"""The database misbehaving under a batch: timeouts and lost connections."""

from __future__ import annotations

import grpc

from batchd.app import App
from batchd.v1 import batch_pb2_grpc
from tests.support.batches import batch, count, fails
from tests.support.servers import make_settings


async def test_statement_timeout_is_deadline_exceeded_and_rolls_back(schema, db):
    app = await App.start(make_settings(schema, statement_timeout_ms=200))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            failure = await fails(stub, batch([
                {"id": "c", "insert": {"table": "customers",
                                       "rows": [{"name": "t", "email": "t@x"}]}},
                {"id": "slow", "call": {"handler": "sleep", "args": {"seconds": 5}}},
            ]))
    finally:
        await app.stop(grace=1)
    assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert failure.error_info["sqlstate"] == "57014"
    assert failure.outcomes()["slow"] == 2  # FAILED
    assert await count(db, "customers") == 0


async def test_lost_connection_mid_batch_is_unavailable_and_commits_nothing(stub, db):
    failure = await fails(stub, batch([
        {"id": "c", "insert": {"table": "customers", "rows": [{"name": "l", "email": "l@x"}]}},
        {"id": "kill", "call": {"handler": "kill_my_connection"}},
    ]))
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert await count(db, "customers") == 0
    # The pool replaces the dead connection: the next batch works.
    response = await stub.BatchExecute(batch([
        {"id": "c", "insert": {"table": "customers", "rows": [{"name": "l", "email": "l@x"}]}}]))
    assert response.committed


async def test_lost_connection_in_independent_mode_fails_only_that_operation(stub, db):
    response = await stub.BatchExecute(batch([
        {"id": "kill", "call": {"handler": "kill_my_connection"}},
        {"id": "c", "insert": {"table": "customers", "rows": [{"name": "m", "email": "m@x"}]}},
    ], mode="MODE_INDEPENDENT"))
    kill, insert = response.results
    assert kill.status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert insert.status.code == 0
    assert await count(db, "customers") == 1
