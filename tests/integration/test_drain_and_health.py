"""Running as one of a fleet: timeouts in every transaction, a bound on every call, a drain
that fails no call, and health that says whether PostgreSQL is there."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from batchd.app import SERVICE_NAME, App
from batchd.db import pool
from batchd.db.pool import detect_pooler, transaction
from batchd.v1 import batch_pb2_grpc
from tests.support.batches import batch, count, fails, rows
from tests.support.locks import LOCK, blocked_batch, waiters
from tests.support.proxy import Proxy
from tests.support.servers import make_settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_of(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service))).status


async def until_health(channel: grpc.aio.Channel, service: str, wanted: int,
                       patience: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    ends = loop.time() + patience
    while loop.time() < ends:
        if await health_of(channel, service) == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"health of {service!r} never became {wanted}")


def insert(email: str) -> list[dict]:
    return [{"id": "c", "insert": {"table": "customers",
                                   "rows": [{"name": "n", "email": email}]}}]


async def test_timeouts_hold_in_every_transaction_not_as_connection_settings(schema):
    app = await App.start(make_settings(schema, statement_timeout_ms=12345, lock_timeout_ms=2345,
                                        idle_in_transaction_timeout_ms=34567))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            for mode in ("MODE_ATOMIC", "MODE_INDEPENDENT"):
                response = await stub.BatchExecute(batch(
                    [{"id": "s", "call": {"handler": "session_settings"}}], mode=mode))
                settings = rows(response.results[0])[0]
                assert settings["statement_timeout"] == "12345ms"
                assert settings["lock_timeout"] == "2345ms"
                assert settings["idle_in_transaction_session_timeout"] == "34567ms"
        # Outside batchd's transactions the connection has PostgreSQL's defaults: nothing is
        # sent at connection start-up, which a pooler in transaction mode would refuse.
        async with app.pool.acquire() as conn:
            assert await conn.fetchval("SHOW lock_timeout") == "0"
    finally:
        await app.stop(grace=1)


async def test_a_call_deadline_lowers_statement_timeout_for_its_transaction(stub):
    response = await stub.BatchExecute(
        batch([{"id": "s", "call": {"handler": "session_settings"}}]), timeout=5)
    value = rows(response.results[0])[0]["statement_timeout"]  # "4987ms", or "4s" if round
    ms = int(value.removesuffix("ms")) if value.endswith("ms") else \
        int(value.removesuffix("s")) * 1000
    # The deadline as the server sees it: gRPC encodes the timeout rounded up (a few ms more).
    assert 0 < ms <= 5100


async def test_pooler_detection_sees_a_direct_connection(schema):
    assert await detect_pooler(schema, 10) == "none"


async def test_a_call_without_deadline_is_bounded_by_max_batch_seconds(schema, db):
    app = await App.start(make_settings(schema, max_batch_seconds=0.5))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            failure = await fails(stub, batch([
                *insert("bounded@x"),
                {"id": "slow", "call": {"handler": "sleep", "args": {"seconds": 30}}}]))
    finally:
        await app.stop(grace=1)
    assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await count(db, "customers") == 0


async def test_drain_keeps_serving_for_the_delay_then_refuses_before_any_header(schema, db):
    app = await App.start(make_settings(schema, drain_delay_seconds=60))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        stopping = asyncio.ensure_future(app.stop(grace=30))
        await db.execute("SELECT pg_advisory_lock($1)", LOCK)
        try:
            await until_health(channel, "", NOT_SERVING)
            assert await health_of(channel, SERVICE_NAME) == NOT_SERVING
            # Health says go away, but a caller that has not noticed yet is still served.
            call = stub.BatchExecute(batch(insert("during-delay@x")))
            assert (await call).committed
            assert dict(await call.initial_metadata())["x-request-id"]
            # A batch in flight (held on a lock the test owns) keeps the server up while it
            # refuses new work.
            in_flight = asyncio.ensure_future(stub.BatchExecute(blocked_batch("in-flight@x")))
            await waiters(db, 1)
            app.drain_released.set()  # the delay is over
            for _ in range(400):
                refused = stub.BatchExecute(batch(insert("refused@x")))
                try:
                    await refused
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the server never refused new work")
            # Trailers only: not committed from gRPC's point of view, so the published retry
            # policy may send it to another replica.
            assert not list(await refused.initial_metadata())
        finally:
            await db.execute("SELECT pg_advisory_unlock($1)", LOCK)
            app.drain_released.set()
        assert (await in_flight).committed  # the work in flight finished within the grace
        await stopping
    assert sorted(r["email"] for r in await db.fetch("SELECT email FROM customers")) == \
        ["during-delay@x", "in-flight@x"]


async def health_list(channel: grpc.aio.Channel) -> dict[str, int]:
    reply = await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest())
    return {name: entry.status for name, entry in reply.statuses.items()}


async def test_health_list_answers_every_entry_as_check_does_until_the_drain(schema):
    app = await App.start(make_settings(schema, drain_delay_seconds=60))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        assert await health_list(channel) == {"": SERVING, SERVICE_NAME: SERVING}
        stopping = asyncio.ensure_future(app.stop(grace=1))
        try:
            await until_health(channel, "", NOT_SERVING)
            assert await health_list(channel) == {"": NOT_SERVING, SERVICE_NAME: NOT_SERVING}
        finally:
            app.drain_released.set()
            await stopping


@pytest.mark.timeout(90)
async def test_health_of_the_service_follows_the_database_and_the_process_stays_serving(schema):
    with tempfile.TemporaryDirectory(prefix="batchd-proxy-") as workdir:
        proxy, via_proxy = await Proxy.for_dsn(schema, Path(workdir))
        app = await App.start(make_settings(via_proxy, db_check_seconds=0.05,
                                            db_unhealthy_after_seconds=0.3))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                assert await health_of(channel, SERVICE_NAME) == SERVING
                proxy.cut()
                await until_health(channel, SERVICE_NAME, NOT_SERVING)
                assert await health_of(channel, "") == SERVING  # alive: restart nothing
                await proxy.restore()
                await until_health(channel, SERVICE_NAME, SERVING)
                stub = batch_pb2_grpc.BatchServiceStub(channel)
                assert (await stub.BatchExecute(batch(insert("back@x")), timeout=30)).committed
        finally:
            await app.stop(grace=1)
            await proxy.close()


async def test_a_transaction_begins_with_its_limits_in_one_round_trip(schema):
    settings = make_settings(schema, statement_timeout_ms=4321)
    conn = await asyncpg.connect(schema, connection_class=pool.Connection)
    sent: list[str] = []
    conn.add_query_logger(lambda record: sent.append(record.query))
    try:
        async with transaction(conn, settings):
            assert await conn.fetchval("SHOW statement_timeout") == "4321ms"
    finally:
        await conn.close()
    begin, show, commit = sent
    assert begin.startswith("BEGIN") and "SET LOCAL statement_timeout = 4321" in begin
    assert show == "SHOW statement_timeout" and commit.startswith("COMMIT")
