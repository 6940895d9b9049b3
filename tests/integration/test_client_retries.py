"""batchd.client's defaults against the real server: request ids, retries (what, how long, and
never past the deadline), several targets, keepalive and the published service config.

Every retry is made to happen deterministically: a batch is held on an advisory lock the test
owns, a connection is cut by an in-process proxy (tests/support/proxy.py) or the server is told to
drain, and the client's ``on_retry`` hook (called before each wait) is where the test lets
things go on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from batchd.app import App
from batchd.client import (
    AsyncClient,
    AtomicBatchError,
    Batch,
    BatchdRpcError,
    Client,
    RetryEvent,
    RetryPolicy,
)
from batchd.client.api import _request_id
from batchd.client.channel import (
    channel_options,
    python_service_config,
    resolve_target,
    service_config,
)
from batchd.client.retry import replay_safe, retryable
from batchd.v1 import batch_pb2
from tests.support.batches import count
from tests.support.client_proxy import Proxy
from tests.support.ports import free_port
from tests.support.servers import own_server

LOCK = 616161
SCHEMA = "/batchd.v1.BatchService/GetSchema"
NO_WAIT = RetryPolicy(jitter=lambda cap: 0.0)


class Lock:
    """The test's advisory lock, on a connection of its own (hooks release it while the test
    uses ``db``)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def release(self) -> None:
        await self.conn.execute("SELECT pg_advisory_unlock($1)", LOCK)


@asynccontextmanager
async def lock_held(schema: str) -> AsyncIterator[Lock]:
    conn = await asyncpg.connect(schema)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK)
        yield Lock(conn)
    finally:
        await conn.close()  # releases it


async def waiting_pids(db: Any, n: int) -> list[int]:
    """The backends of the ``n`` batches waiting on the test's lock, once they are there."""
    for _ in range(400):
        pids = [r["pid"] for r in await db.fetch(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 "
            "AND NOT granted", LOCK)]
        if len(pids) >= n:
            return pids
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {n} batches waiting")


async def rows_in(db: Any, table: str, n: int) -> None:
    for _ in range(400):
        if await count(db, table) >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{table} never had {n} rows")


def held(email: str) -> Batch:
    """A customer, then a wait on the test's lock (same transaction)."""
    b = Batch()
    b.insert("customers", {"name": "held", "email": email})
    b.call("wait_for_lock", {"key": LOCK})
    return b


def one_customer(email: str) -> Batch:
    b = Batch()
    b.insert("customers", {"name": "c", "email": email})
    return b


def error(code: grpc.StatusCode, reason: str = "", retry_after: int | None = None,
          ) -> BatchdRpcError:
    err = BatchdRpcError(code, "x", reason=reason)
    if retry_after is not None:
        err.extra_details.append(error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=retry_after)))
    return err


# --- what is retried (pure) ----------------------------------------------------------------

def test_backoff_is_exponential_capped_and_fully_jittered():
    top = RetryPolicy(jitter=lambda cap: cap)
    assert [top.backoff(n) for n in range(1, 8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    default = RetryPolicy()
    assert all(0 <= default.backoff(5) <= 0.8 for _ in range(200))
    assert len({default.backoff(3) for _ in range(50)}) > 1  # jittered
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_only_refusals_in_progress_and_replay_safe_unavailable_are_retried():
    S = grpc.StatusCode
    for replay in (False, True):
        assert retryable(error(S.RESOURCE_EXHAUSTED, "TOO_MANY_CONCURRENT"), replay_safe=replay)
        assert retryable(error(S.UNAVAILABLE, "DRAINING"), replay_safe=replay)
        assert retryable(error(S.ABORTED, "REQUEST_IN_PROGRESS"), replay_safe=replay)
        assert not retryable(error(S.ABORTED, "VERSION_CONFLICT"), replay_safe=replay)
        assert not retryable(error(S.RESOURCE_EXHAUSTED), replay_safe=replay)
        for code in (S.INVALID_ARGUMENT, S.FAILED_PRECONDITION, S.DEADLINE_EXCEEDED,
                     S.INTERNAL, S.NOT_FOUND, S.ALREADY_EXISTS, S.UNKNOWN):
            assert not retryable(error(code), replay_safe=replay)
    assert retryable(error(S.UNAVAILABLE), replay_safe=True)
    assert retryable(error(S.UNAVAILABLE, "DATABASE_UNAVAILABLE"), replay_safe=True)
    assert not retryable(error(S.UNAVAILABLE), replay_safe=False)


def test_retry_info_is_a_minimum_wait_and_no_wait_outlasts_the_deadline():
    policy = RetryPolicy(jitter=lambda cap: cap)
    busy = error(grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_CONCURRENT", retry_after=1)
    assert policy.next_delay(busy, 1, replay_safe=False, remaining=None) == 1.0
    assert policy.next_delay(busy, 1, replay_safe=False, remaining=0.9) is None
    assert policy.next_delay(busy, 5, replay_safe=False, remaining=None) is None  # used up
    assert policy.next_delay(error(grpc.StatusCode.UNAVAILABLE), 3, replay_safe=True,
                             remaining=10) == 0.2


def test_which_requests_may_be_run_twice():
    def request(**fields: Any) -> batch_pb2.BatchExecuteRequest:
        return batch_pb2.BatchExecuteRequest(**fields)

    assert replay_safe(request(request_id="r1"))
    assert replay_safe(request(request_id="r1", mode=batch_pb2.MODE_ATOMIC))
    assert not replay_safe(request(request_id="r1", mode=batch_pb2.MODE_INDEPENDENT))
    assert not replay_safe(request())
    assert replay_safe(request(validate_only=True))
    assert replay_safe(request(read_only=True, mode=batch_pb2.MODE_INDEPENDENT))


def test_execute_chooses_a_new_request_id_unless_told_otherwise():
    first, second = _request_id(None, False), _request_id(None, False)
    assert first != second and len(first or "") == 32
    assert _request_id(True, False) not in (None, first)
    assert _request_id("mine", False) == "mine"
    assert _request_id(False, False) is None
    assert _request_id(None, True) is None  # validate_only stores nothing


# --- retries against the server ------------------------------------------------------------

async def test_every_execute_has_its_own_request_id_and_runs_once(app, db):
    started = await db.fetchval("SELECT clock_timestamp()")
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        b = one_customer("a@x")
        assert not (await client.execute(b)).replayed
        with pytest.raises(AtomicBatchError):  # a new call: a new id, so it runs again
            await client.execute(b)
    ids = [r["request_id"] for r in await db.fetch(
        "SELECT request_id FROM batchd.requests WHERE created_at >= $1", started)]
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)  # uuid4().hex, stored
    assert await count(db, "customers") == 1


async def test_lost_database_connection_is_retried_with_the_same_request_id(app, schema, db):
    events: list[RetryEvent] = []

    async def on_retry(event: RetryEvent) -> None:
        events.append(event)
        await lock.release()  # the next attempt must not wait again

    target = f"127.0.0.1:{app.port}"
    async with lock_held(schema) as lock, AsyncClient(target, on_retry=on_retry) as client:
        running = asyncio.ensure_future(client.execute(held("lost@x")))
        [pid] = await waiting_pids(db, 1)
        await db.execute("SELECT pg_terminate_backend($1)", pid)  # as a failover would
        result = await running
    assert [(e.method, e.attempt, e.error.code) for e in events] == \
        [("BatchExecute", 1, grpc.StatusCode.UNAVAILABLE)]
    assert result.committed and result.ok and not result.replayed
    assert await count(db, "customers") == 1


async def test_lost_database_connection_is_not_retried_without_a_request_id(app, schema, db):
    events: list[RetryEvent] = []
    async with lock_held(schema), AsyncClient(f"127.0.0.1:{app.port}",
                                              on_retry=events.append) as client:
        running = asyncio.ensure_future(client.execute(held("once@x"), request_id=False))
        [pid] = await waiting_pids(db, 1)
        await db.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(BatchdRpcError) as caught:
            await running
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE and events == []
    assert await count(db, "customers") == 0


@pytest.mark.parametrize("request_id", [None, False])
async def test_a_lost_reply_is_replayed_not_run_twice(app, db, request_id):
    """The batch commits, then the connection dies before any byte of the answer arrives. With
    its request id the retry gets the stored answer. Without one nothing is retried: grpc's own
    retry policy would re-send it (no response headers came), which is why the Python client
    leaves BatchExecute out of it."""
    events: list[RetryEvent] = []
    async with Proxy(app.port) as proxy, AsyncClient(proxy.target,
                                                      on_retry=events.append) as client:
        await client.schema()  # connected
        proxy.pause()
        running = asyncio.ensure_future(client.execute(one_customer("reply@x"),
                                                       request_id=request_id))
        await rows_in(db, "customers", 1)  # committed: only the answer is missing
        proxy.cut()
        if request_id is None:
            result = await running
            assert result.replayed and result.committed
            assert [e.error.code for e in events] == [grpc.StatusCode.UNAVAILABLE]
        else:
            with pytest.raises(BatchdRpcError) as caught:
                await running
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE and events == []
    assert await count(db, "customers") == 1


async def test_too_many_concurrent_is_retried_after_the_retry_info_delay(schema, db):
    events: list[RetryEvent] = []
    async with own_server(schema, max_concurrent_batches=1) as app, lock_held(schema) as lock:
        async with AsyncClient(f"127.0.0.1:{app.port}") as holder:
            first = asyncio.ensure_future(holder.execute(held("first@x")))
            await waiting_pids(db, 1)

            async def on_retry(event: RetryEvent) -> None:
                events.append(event)
                await lock.release()
                await first  # its slot is free before the retry

            async with AsyncClient(f"127.0.0.1:{app.port}", on_retry=on_retry) as client:
                second = await client.execute(one_customer("second@x"), request_id=False)
    assert [(e.error.code, e.error.reason) for e in events] == \
        [(grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_CONCURRENT")]
    assert events[0].delay >= 1.0  # RetryInfo: 1 s
    assert second.committed and (await first).committed
    assert await count(db, "customers") == 2


async def test_request_in_progress_gets_the_first_calls_answer(app, schema, db):
    events: list[RetryEvent] = []
    first: asyncio.Future[Any] | None = None

    async def on_retry(event: RetryEvent) -> None:
        events.append(event)
        await lock.release()
        assert first is not None
        await first

    target = f"127.0.0.1:{app.port}"
    async with lock_held(schema) as lock, AsyncClient(target, on_retry=on_retry) as client:
        b = held("dup@x")
        first = asyncio.ensure_future(client.execute(b, request_id="same-logical-request"))
        await waiting_pids(db, 1)
        second = await client.execute(b, request_id="same-logical-request")
    assert [(e.error.code, e.error.reason) for e in events] == \
        [(grpc.StatusCode.ABORTED, "REQUEST_IN_PROGRESS")]
    original = await first
    assert not original.replayed and second.replayed
    assert second[0].rows == original[0].rows
    assert await count(db, "customers") == 1


async def test_a_draining_server_is_retried_even_without_a_request_id(schema, db):
    async with own_server(schema) as app:
        assert app.admission is not None
        app.admission.drain()
        events: list[RetryEvent] = []

        def undrain(event: RetryEvent) -> None:
            events.append(event)
            app.admission.draining = False  # type: ignore[union-attr]

        async with AsyncClient(f"127.0.0.1:{app.port}", on_retry=undrain) as client:
            result = await client.execute(one_customer("drain@x"), request_id=False)
    assert [e.error.reason for e in events] == ["DRAINING"] and result.committed


async def test_sync_client_retries_the_same_way(schema, db):
    async with own_server(schema) as app:
        assert app.admission is not None
        app.admission.drain()
        events: list[RetryEvent] = []

        def undrain(event: RetryEvent) -> None:
            events.append(event)
            app.admission.draining = False  # type: ignore[union-attr]

        def run() -> Any:
            with Client(f"127.0.0.1:{app.port}", on_retry=undrain) as client:
                return client.execute(one_customer("sync@x"))

        result = await asyncio.to_thread(run)
    assert [e.error.reason for e in events] == ["DRAINING"]
    assert result.committed and not result.replayed


async def test_no_wait_is_started_that_would_outlast_the_deadline(schema, db):
    async with own_server(schema, max_concurrent_batches=1) as app, lock_held(schema) as lock:
        async with AsyncClient(f"127.0.0.1:{app.port}") as holder:
            first = asyncio.ensure_future(holder.execute(held("first@x")))
            await waiting_pids(db, 1)
            events: list[RetryEvent] = []
            async with AsyncClient(f"127.0.0.1:{app.port}", timeout=0.8,
                                   on_retry=events.append) as client:
                started = asyncio.get_running_loop().time()
                with pytest.raises(BatchdRpcError) as caught:
                    await client.execute(one_customer("late@x"))
                elapsed = asyncio.get_running_loop().time() - started
            await lock.release()
            await first
    # RetryInfo asks for 1 s; 0.8 s remain at most: the error comes at once, not a timeout.
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and events == []
    assert elapsed < 0.8


async def test_a_call_past_its_deadline_is_not_retried(app, db):
    events: list[RetryEvent] = []
    b = Batch()
    b.call("sleep", {"seconds": 5})
    async with AsyncClient(f"127.0.0.1:{app.port}", on_retry=events.append) as client:
        with pytest.raises(BatchdRpcError) as caught:
            await client.execute(b, timeout=0.3)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and events == []


async def test_invalid_requests_are_not_retried(app, db):
    events: list[RetryEvent] = []
    b = Batch()
    b.insert("no_such_table", {"x": 1})
    async with AsyncClient(f"127.0.0.1:{app.port}", on_retry=events.append) as client:
        with pytest.raises(AtomicBatchError) as caught:
            await client.execute(b)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and events == []


async def test_an_unreachable_server_is_retried_until_the_attempts_run_out():
    port = free_port()
    events: list[RetryEvent] = []
    async with AsyncClient(f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=3, jitter=lambda
                           cap: 0.0), on_retry=events.append) as client:
        with pytest.raises(BatchdRpcError) as caught:
            await client.schema()
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert [e.attempt for e in events] == [1, 2]
        events.clear()
    async with AsyncClient(f"127.0.0.1:{port}", retry=None, on_retry=events.append) as client:
        with pytest.raises(BatchdRpcError):
            await client.schema()
    assert events == []


# --- channel: targets, keepalive, service config -------------------------------------------

async def test_several_targets_are_used_round_robin(schema, db):
    async with own_server(schema) as one, own_server(schema) as two:
        def served(app: App) -> float:
            return app.metrics.registry.get_sample_value(
                "batchd_rpcs_total", {"method": SCHEMA, "code": "OK"}) or 0.0

        events: list[RetryEvent] = []
        async with AsyncClient(targets=[f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"],
                               on_retry=events.append) as client:
            for _ in range(200):  # until both have connected and answered
                await client.schema()
                if served(one) and served(two):
                    break
            assert served(one) and served(two)
            # One drains: of two calls in a row one is sent there, refused, and retried on the
            # other (after the RetryInfo delay).
            one.admission.drain()  # type: ignore[union-attr]
            results = [await client.execute(one_customer(f"rr{i}@x")) for i in range(2)]
    assert all(r.committed for r in results)
    assert events and {e.error.reason for e in events} == {"DRAINING"}
    assert await count(db, "customers") == 2


def test_several_targets_become_one_static_target():
    assert resolve_target("db.example:50051") == "db.example:50051"
    assert resolve_target(["10.0.0.1:1"]) == "10.0.0.1:1"
    assert resolve_target(["10.0.0.1:1", "10.0.0.2:2"]) == "ipv4:10.0.0.1:1,10.0.0.2:2"
    assert resolve_target(["[::1]:1", "[fe80::2]:2"]) == "ipv6:[::1]:1,[fe80::2]:2"
    for bad in (["a.example:1", "b.example:1"], ["10.0.0.1:1", "[::1]:1"], ["10.0.0.1", "x"],
                ["::1:1", "::2:2"], []):
        with pytest.raises(ValueError):
            resolve_target(bad)


def test_channel_options_keepalive_and_service_config():
    options = dict(channel_options())
    assert options["grpc.keepalive_time_ms"] >= 20_000  # what batchd accepts (batchd.app)
    assert options["grpc.keepalive_permit_without_calls"] == 0
    assert options["grpc.http2.max_pings_without_data"] == 0
    assert options["grpc.enable_retries"] == 1
    used = json.loads(options["grpc.service_config"])
    assert used == python_service_config()
    assert "timeout" not in json.dumps(used)
    assert dict(channel_options([("grpc.enable_retries", 0)]))["grpc.enable_retries"] == 0
    assert "grpc.keepalive_time_ms" not in dict(channel_options(keepalive_seconds=None))


async def test_a_client_balancing_over_several_replicas_checks_their_health_itself():
    """Several addresses: the client balances itself, with gRPC's client-side health checking
    (a draining replica leaves the pick: tests/fleet/test_client_balancing.py); one address may
    be a load balancer's, whose health the client must not judge by one replica behind it.
    (A coroutine: an AsyncClient's channel belongs to the running event loop.)"""
    def checked(**kwargs: Any) -> bool:
        client = AsyncClient(**kwargs)
        config = json.loads(dict(client._settings.options)["grpc.service_config"])
        return config.get("healthCheckConfig") == {"serviceName": "batchd.v1.BatchService"}

    assert checked(targets=["127.0.0.1:1", "127.0.0.1:2"])
    assert checked(target="ipv4:127.0.0.1:1,127.0.0.1:2")
    assert not checked(target="127.0.0.1:1")
    assert not checked(target="dns:///batchd.example:50051")
    assert checked(target="dns:///batchd-headless.example:50051", client_health_check=True)
    assert not checked(targets=["127.0.0.1:1", "127.0.0.1:2"], client_health_check=False)


def test_the_published_service_config_is_in_the_package():
    text = resources.files("batchd.client").joinpath("service_config.json").read_text()
    config = json.loads(text)
    assert config == service_config()
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    [method] = config["methodConfig"]
    assert {n["method"] for n in method["name"]} == {"BatchExecute", "GetSchema"}
    assert method["timeout"] == "30s"
    assert method["retryPolicy"] == {
        "maxAttempts": 5, "initialBackoff": "0.05s", "maxBackoff": "2s", "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"]}
    policy = RetryPolicy()  # the Python client's own retries use the same numbers
    assert (policy.max_attempts, policy.initial_backoff, policy.max_backoff,
            policy.multiplier) == (5, 0.05, 2.0, 2)
