"""What a batch costs on the wire, counted by a proxy that reads the protocol
(tests/support/pgwire.py), and that the session a call leaves behind is reset all the same.

An atomic batch is one round trip to begin (BEGIN with its SET LOCAL limits), one per
statement (coalesced inserts share one; inserts that refer to each other are chained into one,
batchd.batch.chain), and one to commit, whose message also carries the pool's reset: giving the
connection back costs none. The pool holds one connection here, so
every call finds the statements it prepared before.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from batchd.app import App
from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.support.batches import batch, fails
from tests.support.pgwire import Spent, WireCounter
from tests.support.servers import make_settings


@pytest.fixture
async def counted(schema: str,
                  ) -> AsyncIterator[tuple[WireCounter, batch_pb2_grpc.BatchServiceStub]]:
    """batchd (in process, a pool of one connection) reaching PostgreSQL through a counter."""
    # A table whose unique key is checked at COMMIT: a COMMIT that fails (in its catalog,
    # read when the server starts).
    conn = await asyncpg.connect(schema)
    try:
        await conn.execute("DROP TABLE IF EXISTS checked_at_commit; CREATE TABLE "
                           "checked_at_commit (id int PRIMARY KEY, code text NOT NULL, "
                           "UNIQUE (code) DEFERRABLE INITIALLY DEFERRED)")
    finally:
        await conn.close()
    with tempfile.TemporaryDirectory(prefix="batchd-wire-") as workdir:  # a short socket path
        proxy, through = await WireCounter.for_dsn(schema, Path(workdir))
        # Nothing but the calls measured uses the connection: the database watch and the
        # request-id cleanup would otherwise land in a measured call now and then.
        app = await App.start(make_settings(through, pool_min_size=1, pool_max_size=1,
                                            db_check_seconds=3600,
                                            db_unhealthy_after_seconds=7200,
                                            idempotency_cleanup_seconds=3600))
        # The database watch's connection goes through the counter too: its first check
        # (started with the server) must be over before anything is counted.
        assert app.watch is not None
        await app.watch.checked.wait()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        try:
            yield proxy, batch_pb2_grpc.BatchServiceStub(channel)
        finally:
            await channel.close()
            await app.stop(grace=1)
            await proxy.close()
            conn = await asyncpg.connect(schema)
            try:
                await conn.execute("DROP TABLE checked_at_commit")
            finally:
                await conn.close()


def order(tag: str, **fields: object) -> batch_pb2.BatchExecuteRequest:
    """A customer, an order for it, two items and a read of the order: 2 statements (the
    inserts are one chain, the read another)."""
    return batch([
        {"id": "c", "insert": {"table": "customers",
                               "rows": [{"name": tag, "email": f"{tag}@example.com"}]}},
        {"id": "o", "insert": {"table": "orders",
                               "rows": [{"customer_id": {"$ref": "c.id"}, "total": "5.00"}]}},
        {"id": "i1", "insert": {"table": "order_items", "rows": [
            {"order_id": {"$ref": "o.id"}, "product_id": 1, "quantity": 1, "unit_price": "2"}]}},
        {"id": "i2", "insert": {"table": "order_items", "rows": [
            {"order_id": {"$ref": "o.id"}, "product_id": 2, "quantity": 1, "unit_price": "3"}]}},
        {"id": "g", "get": {"table": "orders", "key": {"id": {"$ref": "o.id"}}}},
    ], **fields)


async def spent(proxy: WireCounter, stub: batch_pb2_grpc.BatchServiceStub,
                request: batch_pb2.BatchExecuteRequest) -> Spent:
    before = proxy.snapshot()
    response = await stub.BatchExecute(request)
    assert response.committed
    return proxy.snapshot() - before


async def test_atomic_batch_is_begin_one_round_trip_per_statement_and_commit(counted):
    proxy, stub = counted
    await stub.BatchExecute(order("warm"))  # prepares the statements on the one connection
    cost = await spent(proxy, stub, order("counted"))
    assert cost.round_trips == 1 + 2 + 1
    assert cost.messages["Q"] == 2  # BEGIN and its limits; COMMIT and the pool's reset
    assert cost.messages["S"] == 2 and cost.messages["P"] == 0  # statements prepared before


async def test_a_chain_of_inserts_is_one_round_trip_however_long(counted):
    """Customers, each with an order and items referring to it: 3 to 30 operations, one
    statement, BEGIN and COMMIT around it."""
    proxy, stub = counted

    def orders(tag: str, n: int) -> batch_pb2.BatchExecuteRequest:
        ops: list[dict] = []
        for k in range(n):
            ops += [
                {"id": f"c{k}", "insert": {"table": "customers", "rows": [
                    {"name": tag, "email": f"{tag}{k}@example.com"}]}},
                {"id": f"o{k}", "insert": {"table": "orders", "rows": [
                    {"customer_id": {"$ref": f"c{k}.id"}, "total": "5.00"}]}},
                {"id": f"i{k}", "insert": {"table": "order_items", "rows": [
                    {"order_id": {"$ref": f"o{k}.id"}, "product_id": 1, "quantity": 1,
                     "unit_price": "2"}]}},
            ]
        return batch(ops)

    for n in (1, 10):
        await stub.BatchExecute(orders(f"warm{n}", n))
        cost = await spent(proxy, stub, orders(f"counted{n}", n))
        assert (n, cost.round_trips, cost.messages["S"]) == (n, 3, 1), cost


async def test_one_operation_batch_is_three_round_trips_in_either_mode(counted):
    proxy, stub = counted
    for mode in ("MODE_ATOMIC", "MODE_INDEPENDENT"):
        one = [{"id": "p", "get": {"table": "products", "key": {"id": 1}}}]
        await stub.BatchExecute(batch(one, mode=mode))
        cost = await spent(proxy, stub, batch(one, mode=mode))
        assert (mode, cost.round_trips, cost.messages["Q"]) == (mode, 3, 2), cost


async def test_session_state_a_call_leaves_is_reset_before_the_connection_serves_again(
        counted, db):
    """The reset that rides on COMMIT (or ROLLBACK) is the pool's whole reset: a session
    advisory lock is released and a session setting is gone, whether the batch committed or
    rolled back, before the answer comes back."""
    _, stub = counted
    key = 7301

    async def held() -> int:
        return int(await db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = "
                                     "'advisory' AND objid = $1", key))

    leave = {"id": "l", "call": {"handler": "leave_session_state", "args": {"key": key}}}
    await stub.BatchExecute(batch([leave]))
    assert await held() == 0
    seen = await stub.BatchExecute(batch([{"id": "s", "call": {"handler": "session_state"}}]))
    state = dict(seen.results[0].rows[0])
    assert state["setting"] in (None, "") and state["locks"] == 0

    missing = {"id": "g", "get": {"table": "products", "key": {"id": 999}}}
    failure = await fails(stub, batch([leave, missing]))  # rolled back: the lock outlives it
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert await held() == 0


async def test_a_failed_commit_leaves_the_reset_to_the_pool(counted, db):
    """A COMMIT that fails runs nothing after it in its message: the connection is reset when
    it goes back to the pool instead, one round trip more, and the session is clean all the
    same."""
    proxy, stub = counted
    key = 7302
    request = batch([
        {"id": "l", "call": {"handler": "leave_session_state", "args": {"key": key}}},
        {"id": "a", "insert": {"table": "checked_at_commit", "rows": [{"id": 1, "code": "x"}]}},
        {"id": "b", "insert": {"table": "checked_at_commit", "rows": [{"id": 2, "code": "x"}]}},
    ])
    await fails(stub, request)  # warm: the statements are prepared
    before = proxy.snapshot()
    failure = await fails(stub, request)
    cost = proxy.snapshot() - before
    assert failure.error_info.get("operation_id") is None  # the COMMIT failed, no operation
    # BEGIN, the handler's two statements (the one without parameters a simple query), the
    # two inserts as one, COMMIT, and the reset on release.
    assert (cost.round_trips, cost.messages["Q"]) == (1 + 2 + 1 + 1 + 1, 4), cost
    assert int(await db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                 "AND objid = $1", key)) == 0
    assert await db.fetchval("SELECT count(*) FROM checked_at_commit") == 0


async def test_a_group_shares_one_insert_without_a_savepoint_and_a_failure_names_its_operation(
        counted, db):
    """INDEPENDENT: a group's consecutive inserts are one statement with no savepoint around
    it (BEGIN, the statement, COMMIT); when it fails, the group runs again apart and the
    failure is the operation's own."""
    proxy, stub = counted

    def group(tag: str, emails: list[str]) -> batch_pb2.BatchExecuteRequest:
        return batch([{"id": f"{tag}{i}", "group": "g", "insert": {"table": "customers", "rows": [
            {"name": tag, "email": email}]}} for i, email in enumerate(emails)],
            mode="MODE_INDEPENDENT")

    await stub.BatchExecute(group("w", ["w0@x", "w1@x", "w2@x"]))
    cost = await spent(proxy, stub, group("c", ["c0@x", "c1@x", "c2@x"]))
    assert (cost.round_trips, cost.messages["Q"]) == (3, 2)

    response = await stub.BatchExecute(group("f", ["f0@x", "c1@x", "f2@x"]))  # c1@x is taken
    assert not response.committed
    assert [r.outcome for r in response.results] == [
        batch_pb2.OUTCOME_ROLLED_BACK, batch_pb2.OUTCOME_FAILED, batch_pb2.OUTCOME_NOT_RUN]
    assert response.results[1].status.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert await db.fetchval("SELECT count(*) FROM customers WHERE name = 'f'") == 0


async def test_a_batch_with_a_request_id_adds_one_round_trip_to_store_its_answer(counted):
    """The lock and the claim row lead the first chain's statement (its inserts run only
    behind a claimed id), the operations with no savepoint around them, the answer stored,
    COMMIT; a retry's replay reads the stored answer."""
    proxy, stub = counted
    for _ in range(2):  # run, then replayed: every statement prepared
        await stub.BatchExecute(order("warm", request_id="warm-1"))
    cost = await spent(proxy, stub, order("claimed", request_id="claimed-1"))
    assert (cost.round_trips, cost.messages["Q"]) == (1 + 2 + 1 + 1, 2)
    before = proxy.snapshot()
    replayed = await stub.BatchExecute(order("claimed", request_id="claimed-1"))
    assert replayed.replayed
    cost = proxy.snapshot() - before
    assert (cost.round_trips, cost.messages["Q"]) == (1 + 1 + 1 + 1, 2)  # the claim finds it


async def test_a_request_id_claimed_in_a_chain_runs_nothing_when_it_is_not_this_calls(
        counted, db):
    """The claim leads the chain: when the id is another call's (its answer stored), the
    chain's inserts insert nothing — not even a sequence value is drawn — and the stored answer
    is the answer."""
    _, stub = counted
    first = await stub.BatchExecute(order("once", request_id="once-1"))
    ids = await db.fetchval("SELECT last_value FROM customers_id_seq")
    again = await stub.BatchExecute(order("once", request_id="once-1"))
    assert again.replayed and again.results[0].rows == first.results[0].rows
    assert await db.fetchval("SELECT last_value FROM customers_id_seq") == ids
    assert await db.fetchval("SELECT count(*) FROM customers WHERE name = 'once'") == 1

    other = await fails(stub, order("other", request_id="once-1"))  # another request, same id
    assert other.code == grpc.StatusCode.FAILED_PRECONDITION
    assert await db.fetchval("SELECT count(*) FROM customers WHERE name = 'other'") == 0
