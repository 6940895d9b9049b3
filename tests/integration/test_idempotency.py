"""Request ids: the first final answer is stored, a retry gets it back without anything running
again, and a duplicate arriving while the first call runs is told to retry (ABORTED), on one
server or on two server processes sharing the database."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from batchd.app import App
from batchd.batch.idempotency import fingerprint
from batchd.config import TokenSettings
from batchd.errors import BatchdError, InvalidArgument, from_rpc_status, to_rpc_status
from batchd.principals import hash_token
from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.support.batches import (
    FAILED,
    ROLLED_BACK,
    SUCCEEDED,
    BatchFailure,
    batch,
    count,
    fails,
    rows,
)
from tests.support.cli import BATCHD
from tests.support.servers import make_settings

INDEPENDENT = {"mode": "MODE_INDEPENDENT"}
ROOT = Path(__file__).parents[2]


def new_id() -> str:
    return f"test:{uuid.uuid4()}"


def customer(op_id: str, email: str) -> dict[str, Any]:
    return {"id": op_id, "insert": {"table": "customers",
                                    "rows": [{"name": op_id, "email": email}]}}


def barrier(key: int, op_id: str = "wait") -> dict[str, Any]:
    """An operation that waits for advisory lock ``key``, which the test holds."""
    return {"id": op_id, "call": {"handler": "wait_for_lock", "args": {"key": key}}}


def without_replayed(response: batch_pb2.BatchExecuteResponse,
                     ) -> batch_pb2.BatchExecuteResponse:
    copy = batch_pb2.BatchExecuteResponse()
    copy.CopyFrom(response)
    copy.ClearField("replayed")
    return copy


async def stored(db: asyncpg.Connection, request_id: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM batchd.requests WHERE request_id = $1", request_id)


async def waiting_on(db: asyncpg.Connection, key: int, waiters: int = 1) -> None:
    """Until ``waiters`` sessions wait for advisory lock ``key``."""
    for _ in range(400):
        if await db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                             "AND objid = $1 AND NOT granted", key) >= waiters:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nobody waits for advisory lock {key}")


# --- the request, without a database --------------------------------------------------------

def test_fingerprint_ignores_the_request_id_and_the_order_of_columns():
    a = batch([{"id": "c", "insert": {"table": "t", "rows": [{"a": 1, "b": "x"}]}}],
              request_id="one")
    b = batch([{"id": "c", "insert": {"table": "t", "rows": [{"b": "x", "a": 1}]}}],
              request_id="two")
    c = batch([{"id": "c", "insert": {"table": "t", "rows": [{"a": 2, "b": "x"}]}}],
              request_id="one")
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
    assert a.request_id == "one"  # given back after hashing


def test_a_stored_failure_status_is_rebuilt_exactly():
    error = InvalidArgument.field("operations[0].x", "bad", operation_id="op")
    error.extra_details.append(batch_pb2.BatchExecuteResponse(attempts=2))
    status = to_rpc_status(error)
    rebuilt = from_rpc_status(status)
    assert isinstance(rebuilt, BatchdError)
    assert rebuilt.code == grpc.StatusCode.INVALID_ARGUMENT
    assert to_rpc_status(rebuilt) == status


# --- one server ------------------------------------------------------------------------------

async def test_retry_returns_the_stored_response_without_running_again(stub, db):
    rid = new_id()
    request = batch([customer("c", "once@example.com"),
                     {"id": "stock", "call": {"handler": "reserve_stock",
                                              "args": {"product_id": 1, "quantity": 1}}}],
                    request_id=rid)
    first = await stub.BatchExecute(request)
    assert first.committed and not first.replayed
    again = await stub.BatchExecute(request)
    assert again.replayed
    assert without_replayed(again) == first
    assert await count(db, "customers") == 1
    assert await db.fetchval("SELECT stock FROM products WHERE id = 1") == 99
    row = await stored(db, rid)
    assert row["response"] is not None and row["status"] is None
    assert row["principal"] is None  # authentication is off


async def test_same_id_with_a_different_request_is_failed_precondition(stub, db):
    rid = new_id()
    await stub.BatchExecute(batch([customer("c", "first@example.com")], request_id=rid))
    failure = await fails(stub, batch([customer("c", "second@example.com")], request_id=rid))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.error_info["reason"] == "REQUEST_ID_REUSED"
    assert f'request id "{rid}" was already used for a different request' in failure.message
    # Any field counts: the same operations in another mode are another request.
    other_mode = await fails(stub, batch([customer("c", "first@example.com")], request_id=rid,
                                         **INDEPENDENT))
    assert other_mode.error_info["reason"] == "REQUEST_ID_REUSED"
    assert await count(db, "customers") == 1


async def test_duplicate_while_the_first_call_runs_is_aborted_and_retryable(stub, db):
    rid, key = new_id(), 515151
    request = batch([customer("c", "slow@example.com"), barrier(key)], request_id=rid)
    await db.execute("SELECT pg_advisory_lock($1)", key)
    try:
        first = asyncio.ensure_future(stub.BatchExecute(request))
        await waiting_on(db, key)
        duplicate = await fails(stub, request)
        assert duplicate.code == grpc.StatusCode.ABORTED
        assert duplicate.error_info["reason"] == "REQUEST_IN_PROGRESS"
        assert "still running" in duplicate.message
        assert duplicate.response is None  # nothing ran, so no outcomes to report
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", key)
    original = await first
    assert original.committed and not original.replayed
    retried = await stub.BatchExecute(request)
    assert retried.replayed and without_replayed(retried) == original
    assert await count(db, "customers") == 1


async def test_independent_batch_is_stored_once_all_operations_finished(stub, db):
    rid, key = new_id(), 525252
    request = batch([customer("c", "ind@example.com"), customer("dup", "ind@example.com"),
                     barrier(key)], request_id=rid, **INDEPENDENT)
    await db.execute("SELECT pg_advisory_lock($1)", key)
    try:
        first = asyncio.ensure_future(stub.BatchExecute(request))
        await waiting_on(db, key)
        duplicate = await fails(stub, request)
        assert duplicate.error_info["reason"] == "REQUEST_IN_PROGRESS"
        assert await stored(db, rid) is None  # the claim is not committed while it runs
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", key)
    original = await first
    outcomes = sorted(r.outcome for r in original.results)
    assert outcomes == [SUCCEEDED, SUCCEEDED, FAILED]
    # Stored whatever the operations' outcomes: the one that failed is not retried either.
    retried = await stub.BatchExecute(request)
    assert retried.replayed and without_replayed(retried) == original
    assert await count(db, "customers") == 1


async def test_final_atomic_failure_is_stored_and_replayed(stub, db):
    await db.execute("INSERT INTO customers (name, email) VALUES ('x', 'taken@example.com')")
    rid = new_id()
    request = batch([customer("ok", "new@example.com"), customer("dup", "taken@example.com")],
                    request_id=rid)
    failure = await fails(stub, request)
    assert failure.code == grpc.StatusCode.ALREADY_EXISTS
    assert not failure.response.replayed
    # Even once the conflict is gone, the id's answer stays the first one: nothing runs.
    await db.execute("DELETE FROM customers")
    again = await fails(stub, request)
    assert (again.code, again.message, again.error_info) == (
        failure.code, failure.message, failure.error_info)
    assert again.response.replayed
    assert without_replayed(again.response) == failure.response
    assert again.outcomes() == {"ok": ROLLED_BACK, "dup": FAILED}
    assert await count(db, "customers") == 0
    row = await stored(db, rid)
    assert row["status"] is not None and row["response"] is None


async def test_retryable_failure_is_not_stored_and_the_retry_runs(stub, db):
    rid = new_id()
    request = batch([customer("c", "conflict@example.com"),
                     {"id": "x", "call": {"handler": "fail_serialization",
                                          "args": {"key": rid, "times": 4}}}], request_id=rid)
    failure = await fails(stub, request)  # four serialization failures: retries exhausted
    assert failure.code == grpc.StatusCode.ABORTED
    assert failure.error_info["sqlstate"] == "40001"
    assert await stored(db, rid) is None
    response = await stub.BatchExecute(request)  # the fifth run passes
    assert response.committed and not response.replayed
    assert await count(db, "customers") == 1


async def test_request_refused_before_running_leaves_the_id_free(stub, db):
    rid = new_id()
    failure = await fails(stub, batch([
        {"id": "bad", "insert": {"table": "customers", "rows": [{"nope": 1}]}}],
        request_id=rid))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert await stored(db, rid) is None
    fixed = await stub.BatchExecute(batch([customer("c", "fixed@example.com")], request_id=rid))
    assert fixed.committed and not fixed.replayed


async def test_validate_only_with_a_request_id_stores_nothing(stub, db):
    rid = new_id()
    request = batch([customer("c", "dry@example.com")], request_id=rid, validate_only=True)
    for _ in range(2):
        response = await stub.BatchExecute(request)
        assert not response.committed and not response.replayed
    assert await stored(db, rid) is None
    real = await stub.BatchExecute(batch([customer("c", "dry@example.com")], request_id=rid))
    assert real.committed and not real.replayed


async def test_malformed_request_id_is_invalid_argument(stub):
    for bad in ("has space", "x" * 129, "slash/no"):
        failure = await fails(stub, batch([customer("c", "x@example.com")], request_id=bad))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
        assert failure.violations[0][0] == "request_id"


async def test_read_only_batch_stays_read_only_and_is_replayed(stub, db):
    rid = new_id()
    request = batch([{"id": "tx", "call": {"handler": "tx_info"}}], request_id=rid,
                    read_only=True)
    first = await stub.BatchExecute(request)
    assert rows(first.results[0])[0]["read_only"] == "on"
    assert (await stub.BatchExecute(request)).replayed
    failure = await fails(stub, batch([customer("c", "ro@example.com")], request_id=new_id(),
                                      read_only=True))
    assert failure.error_info["sqlstate"] == "25006"
    assert await count(db, "customers") == 0


async def test_repeatable_read_batch_with_a_request_id(stub, db):
    rid = new_id()
    request = batch([customer("c", "rr@example.com")], request_id=rid,
                    isolation="ISOLATION_LEVEL_REPEATABLE_READ")
    first = await stub.BatchExecute(request)
    again = await stub.BatchExecute(request)
    assert again.replayed and without_replayed(again) == first
    assert await count(db, "customers") == 1


@asynccontextmanager
async def serving(schema: str,
                  **overrides: Any) -> AsyncIterator[batch_pb2_grpc.BatchServiceStub]:
    app = await App.start(make_settings(schema, **overrides))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield batch_pb2_grpc.BatchServiceStub(channel)
    finally:
        await app.stop(grace=1)


async def test_expired_ids_run_again_and_are_deleted(schema, db):
    rid = new_id()
    request = batch([{"id": "x", "insert": {"table": "no_key", "rows": [{"x": 1}]}}],
                    request_id=rid)
    async with serving(schema, idempotency_ttl_seconds=1,
                       idempotency_cleanup_seconds=0.2) as stub:
        assert not (await stub.BatchExecute(request)).replayed
        assert (await stub.BatchExecute(request)).replayed
        await asyncio.sleep(1.1)
        # Expired: a new request with the old id, whether the cleanup came by yet or not.
        assert not (await stub.BatchExecute(request)).replayed
        assert await count(db, "no_key") == 2
        for _ in range(50):
            if await stored(db, rid) is None:
                break
            await asyncio.sleep(0.1)
        assert await stored(db, rid) is None, "the cleanup did not delete the expired id"


async def test_another_principal_cannot_use_the_id(schema, db):
    alice, bob = "alice-secret", "bob-secret"
    tokens = [TokenSettings(sha256=hash_token(t), principal=t.split("-")[0], scopes=["admin"])
              for t in (alice, bob)]
    rid = new_id()
    request = batch([customer("c", "mine@example.com")], request_id=rid)
    async with serving(schema, tokens=tokens) as stub:
        await stub.BatchExecute(request, metadata=(("authorization", f"Bearer {alice}"),))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.BatchExecute(request, metadata=(("authorization", f"Bearer {bob}"),))
        failure = BatchFailure(caught.value)
        assert failure.error_info["reason"] == "REQUEST_ID_REUSED"
        assert "mine@example.com" not in failure.message
        replay = await stub.BatchExecute(request,
                                         metadata=(("authorization", f"Bearer {alice}"),))
        assert replay.replayed
    assert (await stored(db, rid))["principal"] == "alice"


# --- two server processes on one database ---------------------------------------------------

@asynccontextmanager
async def server_process(schema: str, log: Path) -> AsyncIterator[str]:
    """A real `batchd serve` on a free port; yields its address."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")},
           "BATCHD_DSN": schema,
           "BATCHD_HANDLER_MODULES": '["tests.support.handlers", "batchd.demo.handlers"]',
           "BATCHD_METRICS_PORT": "0", "BATCHD_HTTP_PORT": "0", "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(BATCHD), "serve", "--port", "0", env=env, stdout=out, stderr=out)
    try:
        for _ in range(600):
            text = await asyncio.to_thread(log.read_text)
            found = re.search(r"batchd listening on 127\.0\.0\.1:(\d+)", text)
            if found:
                break
            assert proc.returncode is None, f"batchd exited early:\n{text}"
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"batchd did not start:\n{text}")
        yield f"127.0.0.1:{found.group(1)}"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def call(target: str, request: batch_pb2.BatchExecuteRequest,
               ) -> batch_pb2.BatchExecuteResponse | BatchFailure:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            return await batch_pb2_grpc.BatchServiceStub(channel).BatchExecute(request)
        except grpc.aio.AioRpcError as err:
            return BatchFailure(err)


async def test_two_server_processes_run_the_same_request_once(schema, db, tmp_path):
    async with server_process(schema, tmp_path / "a.log") as a, \
            server_process(schema, tmp_path / "b.log") as b:
        # Both at once, the first one held inside its transaction: the other is ABORTED.
        rid, key = new_id(), 535353
        request = batch([customer("c", "twice@example.com"), barrier(key),
                         {"id": "stock", "call": {"handler": "reserve_stock",
                                                  "args": {"product_id": 1, "quantity": 1}}}],
                        request_id=rid)
        await db.execute("SELECT pg_advisory_lock($1)", key)
        try:
            calls = [asyncio.ensure_future(call(target, request)) for target in (a, b)]
            done, _ = await asyncio.wait(calls, timeout=30,
                                         return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1, [c.result() for c in done]
            [loser] = done
            failure = loser.result()
            assert isinstance(failure, BatchFailure), failure
            assert failure.code == grpc.StatusCode.ABORTED
            assert failure.error_info["reason"] == "REQUEST_IN_PROGRESS"
            await waiting_on(db, key)  # the winner is still inside its transaction
        finally:
            await db.execute("SELECT pg_advisory_unlock($1)", key)
        [winner] = [c for c in calls if c is not loser]
        original = await winner
        assert isinstance(original, batch_pb2.BatchExecuteResponse)
        assert original.committed and not original.replayed
        for target in (a, b):  # the retry gets the stored answer from either server
            retried = await call(target, request)
            assert isinstance(retried, batch_pb2.BatchExecuteResponse)
            assert retried.replayed and without_replayed(retried) == original
        assert await count(db, "customers") == 1
        assert await db.fetchval("SELECT stock FROM products WHERE id = 1") == 99

        # Unsynchronized, several times: one runs; the other is ABORTED or, if it came after
        # the first committed, gets the replay. Never a second run.
        for i in range(5):
            request = batch([customer("c", f"race{i}@example.com"),
                             {"id": "nap", "call": {"handler": "sleep",
                                                    "args": {"seconds": 0.05}}}],
                            request_id=new_id())
            answers = await asyncio.gather(call(a, request), call(b, request))
            originals = [r for r in answers
                         if isinstance(r, batch_pb2.BatchExecuteResponse) and not r.replayed]
            assert len(originals) == 1, answers
            [other] = [r for r in answers if r is not originals[0]]
            if isinstance(other, BatchFailure):
                assert (other.code, other.error_info["reason"]) == (
                    grpc.StatusCode.ABORTED, "REQUEST_IN_PROGRESS")
            else:
                assert other.replayed and without_replayed(other) == originals[0]
        assert await count(db, "customers") == 6


async def test_a_replayed_answer_is_not_counted_as_operations_run(app, stub, db):
    def inserts() -> float:
        value = app.metrics.registry.get_sample_value(
            "batchd_operations_total", {"kind": "insert", "outcome": "SUCCEEDED"})
        return value or 0.0

    request = batch([{"id": "c", "insert": {"table": "customers",
                                            "rows": [{"name": "m", "email": "m@x"}]}}],
                    request_id="metrics-replay-1")
    before = inserts()
    await stub.BatchExecute(request)
    assert inserts() == before + 1
    assert (await stub.BatchExecute(request)).replayed
    assert inserts() == before + 1
