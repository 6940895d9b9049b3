"""INDEPENDENT batches: each operation its own transaction and its own outcome."""

from __future__ import annotations

import asyncio

import grpc

from tests.support.batches import FAILED, SKIPPED, SUCCEEDED, batch, count, fails, rows

INDEPENDENT = {"mode": "MODE_INDEPENDENT"}


async def test_one_missing_row_fails_only_that_operation(stub, db):
    await db.execute("INSERT INTO customers (id, name, email) VALUES (1, 'a', 'a@x'), "
                     "(2, 'b', 'b@x')")
    response = await stub.BatchExecute(batch([
        {"id": "u1", "update": {"table": "customers", "key": {"id": 1}, "set": {"name": "A"}}},
        {"id": "missing", "update": {"table": "customers", "key": {"id": 999},
                                     "set": {"name": "?"}}},
        {"id": "u2", "update": {"table": "customers", "key": {"id": 2}, "set": {"name": "B"}}},
    ], **INDEPENDENT))
    assert response.committed
    outcomes = [(r.id, r.outcome, r.status.code) for r in response.results]
    assert outcomes == [("u1", SUCCEEDED, 0),
                        ("missing", FAILED, grpc.StatusCode.NOT_FOUND.value[0]),
                        ("u2", SUCCEEDED, 0)]
    assert 'operation "missing"' in response.results[1].status.message
    names = [r["name"] for r in await db.fetch("SELECT name FROM customers ORDER BY id")]
    assert names == ["A", "B"]


async def test_dependents_of_a_failed_operation_are_skipped(stub, db):
    await db.execute("INSERT INTO customers (name, email) VALUES ('x', 'taken@x')")
    response = await stub.BatchExecute(batch([
        {"id": "c", "insert": {"table": "customers", "rows": [{"name": "y",
                                                                "email": "taken@x"}]}},
        {"id": "o", "insert": {"table": "orders", "rows": [{"customer_id": {"$ref": "c.id"}}]}},
        {"id": "after", "depends_on": ["o"], "call": {"handler": "echo"}},
        {"id": "free", "insert": {"table": "customers", "rows": [{"name": "z",
                                                                   "email": "free@x"}]}},
    ], **INDEPENDENT))
    by_id = {r.id: r for r in response.results}
    assert by_id["c"].outcome == FAILED
    assert by_id["c"].status.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert by_id["o"].outcome == SKIPPED and '"c" did not succeed' in \
        by_id["o"].status.message
    assert by_id["after"].outcome == SKIPPED
    assert by_id["free"].outcome == SUCCEEDED
    assert await count(db, "customers") == 2


async def test_references_order_operations_even_when_listed_first(stub, db):
    response = await stub.BatchExecute(batch([
        {"id": "item", "insert": {"table": "order_items", "rows": [{
            "order_id": {"$ref": "order.id"}, "product_id": 1, "quantity": 1,
            "unit_price": "1.00"}]}},
        {"id": "order", "insert": {"table": "orders",
                                   "rows": [{"customer_id": {"$ref": "cust.id"}}]}},
        {"id": "cust", "insert": {"table": "customers", "rows": [{"name": "n",
                                                                   "email": "n@x"}]}},
    ], **INDEPENDENT))
    assert [r.outcome for r in response.results] == [SUCCEEDED] * 3
    assert await count(db, "order_items") == 1


async def test_each_operation_commits_in_its_own_transaction(stub):
    response = await stub.BatchExecute(batch([
        {"id": f"t{i}", "call": {"handler": "tx_info"}} for i in range(4)], **INDEPENDENT))
    txids = {rows(r)[0]["txid"] for r in response.results}
    assert len(txids) == 4


async def test_operations_run_concurrently(stub, db):
    # A barrier: the test holds an advisory lock, every operation waits for it. Four waiters
    # at once can only be seen if the four operations really run concurrently.
    key = 424242
    await db.execute("SELECT pg_advisory_lock($1)", key)
    try:
        call = asyncio.ensure_future(stub.BatchExecute(batch([
            {"id": f"w{i}", "call": {"handler": "wait_for_lock", "args": {"key": key}}}
            for i in range(4)], **INDEPENDENT)))
        for _ in range(400):
            waiting = await db.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 "
                "AND NOT granted", key)
            if waiting == 4:
                break
            await asyncio.sleep(0.05)
        assert waiting == 4
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", key)
    response = await call
    assert [r.outcome for r in response.results] == [SUCCEEDED] * 4


async def test_dependency_cycle_is_invalid_before_anything_runs(stub, db):
    failure = await fails(stub, batch([
        {"id": "a", "depends_on": ["b"], "insert": {"table": "customers",
                                                    "rows": [{"name": "a", "email": "a@x"}]}},
        {"id": "b", "depends_on": ["c"], "call": {"handler": "echo"}},
        {"id": "c", "depends_on": ["a"], "call": {"handler": "echo"}},
    ], **INDEPENDENT))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cycle" in failure.message and "['a', 'b', 'c']" in failure.message
    assert await count(db, "customers") == 0


async def test_unknown_dependency_or_reference_is_invalid(stub):
    unknown_dep = await fails(stub, batch([
        {"id": "a", "depends_on": ["ghost"], "call": {"handler": "echo"}}], **INDEPENDENT))
    assert unknown_dep.code == grpc.StatusCode.INVALID_ARGUMENT
    assert unknown_dep.violations[0][0] == "operations[0].depends_on[0]"
    unknown_field = await fails(stub, batch([
        {"id": "c", "insert": {"table": "customers", "rows": [{"name": "a", "email": "a@x"}]}},
        {"id": "o", "insert": {"table": "orders",
                               "rows": [{"customer_id": {"$ref": "c.email"}}]}},
    ], **INDEPENDENT))
    assert unknown_field.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "returns only ['id']" in unknown_field.message


async def test_an_invalid_operation_fails_alone(stub, db):
    response = await stub.BatchExecute(batch([
        {"id": "bad", "insert": {"table": "customers", "rows": [{"nam": "typo"}]}},
        {"id": "good", "insert": {"table": "customers", "rows": [{"name": "g",
                                                                   "email": "g@x"}]}},
    ], **INDEPENDENT))
    assert [r.outcome for r in response.results] == [FAILED, SUCCEEDED]
    assert response.results[0].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert await count(db, "customers") == 1


async def test_independent_validate_only_sees_dependents_and_commits_nothing(stub, db):
    response = await stub.BatchExecute(batch([
        {"id": "c", "insert": {"table": "customers", "rows": [{"name": "d", "email": "d@x"}]}},
        {"id": "o", "insert": {"table": "orders", "rows": [{"customer_id": {"$ref": "c.id"}}]}},
        {"id": "dup", "insert": {"table": "customers", "rows": [{"name": "d2",
                                                                  "email": "d@x"}]}},
    ], validate_only=True, **INDEPENDENT))
    assert not response.committed
    assert [r.outcome for r in response.results] == [SUCCEEDED, SUCCEEDED,
                                                     FAILED]
    assert await count(db, "customers") == 0 and await count(db, "orders") == 0
