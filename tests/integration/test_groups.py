"""Groups in an INDEPENDENT batch: each group one transaction, all or nothing, reported like an
atomic batch (FAILED / ROLLED_BACK / NOT_RUN), with references and depends_on across groups,
a failed group skipping its dependents, serialization failures retried for the group whole."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import json_format

from batchd.errors import from_rpc_status
from batchd.v1 import batch_pb2
from tests.support import handlers
from tests.support.batches import (
    FAILED,
    NOT_RUN,
    ROLLED_BACK,
    SKIPPED,
    SUCCEEDED,
    batch,
    count,
    fails,
    rows,
)

INDEPENDENT = {"mode": "MODE_INDEPENDENT"}
CODE = {c.value[0]: c for c in grpc.StatusCode}


def order(g: int | str, **row: Any) -> dict[str, Any]:
    """The order of group ``g`` (operation id ``o<g>``), for customer 1 unless told."""
    return {"id": f"o{g}", "group": f"g{g}", "insert": {"table": "orders", "rows": [
        {"customer_id": 1, "total": "10.00", **row}]}}


def item(g: int | str, n: int, **row: Any) -> dict[str, Any]:
    """Item ``n`` of group ``g``'s order (operation id ``o<g>i<n>``)."""
    return {"id": f"o{g}i{n}", "group": f"g{g}", "insert": {"table": "order_items", "rows": [
        {"order_id": {"$ref": f"o{g}.id"}, "product_id": 1, "quantity": 1, "unit_price": "1.00",
         **row}]}}


def order_with_items(g: int | str, bad: dict[int, dict[str, Any]] | None = None,
                     **order_row: Any) -> list[dict[str, Any]]:
    """An order and its 4 items, one group; ``bad``: item number -> what breaks it."""
    return [order(g, **order_row), *(item(g, n, **(bad or {}).get(n, {})) for n in range(4))]


def by_id(response: batch_pb2.BatchExecuteResponse) -> dict[str, batch_pb2.OperationResult]:
    return {r.id: r for r in response.results}


def outcomes(response: batch_pb2.BatchExecuteResponse, *ids: str) -> list[int]:
    results = by_id(response)
    return [results[i].outcome for i in ids]


def code(result: batch_pb2.OperationResult) -> grpc.StatusCode:
    return CODE[result.status.code]


def group_ids(g: int | str) -> list[str]:
    return [f"o{g}", *(f"o{g}i{n}" for n in range(4))]


async def customer_one(db: asyncpg.Connection) -> None:
    """Customer 1 (the tables start empty, their identities at 1)."""
    assert await db.fetchval("INSERT INTO customers (name, email) VALUES ('Ada', 'ada@x') "
                             "RETURNING id") == 1


# Every 7th group breaks a CHECK (quantity > 0) in its item 2, every 11th a unique key in item 3.
CHECK_BROKEN = {g for g in range(50) if g % 7 == 3}
UNIQUE_BROKEN = {g for g in range(50) if g % 11 == 5} - CHECK_BROKEN
TAKEN_ITEM_ID = 999_999


def bad_items(g: int) -> dict[int, dict[str, Any]]:
    if g in CHECK_BROKEN:
        return {2: {"quantity": 0}}
    if g in UNIQUE_BROKEN:
        return {3: {"id": TAKEN_ITEM_ID}}
    return {}


async def test_fifty_orders_with_their_items_each_commit_or_roll_back_whole(stub, db):
    await customer_one(db)
    await db.execute("INSERT INTO orders (id, customer_id) VALUES (900000, 1)")
    await db.execute("INSERT INTO order_items (id, order_id, product_id, quantity, unit_price) "
                     "VALUES ($1, 900000, 1, 1, 1)", TAKEN_ITEM_ID)
    ops = [op for g in range(50) for op in order_with_items(g, bad_items(g))]
    response = await stub.BatchExecute(batch(ops, **INDEPENDENT))

    assert response.committed and response.attempts == 1 and len(response.results) == 250
    results = by_id(response)
    good = [g for g in range(50) if g not in CHECK_BROKEN | UNIQUE_BROKEN]
    assert len(good) == 39
    for g in good:
        assert outcomes(response, *group_ids(g)) == [SUCCEEDED] * 5
        order_id = int(rows(results[f"o{g}"])[0]["id"])
        # The 4 items, coalesced into one statement as in an atomic batch (one command id).
        assert await db.fetchval("SELECT count(*) FROM order_items WHERE order_id = $1",
                                 order_id) == 4
        assert await db.fetchval("SELECT count(DISTINCT cmin::text) FROM order_items "
                                 "WHERE order_id = $1", order_id) == 1
    for g in CHECK_BROKEN:
        assert outcomes(response, *group_ids(g)) == [
            ROLLED_BACK, ROLLED_BACK, ROLLED_BACK, FAILED,
            NOT_RUN]
        failed = results[f"o{g}i2"]
        assert code(failed) == grpc.StatusCode.INVALID_ARGUMENT
        assert from_rpc_status(failed.status).error_info["sqlstate"] == "23514"
        assert failed.status.message.startswith(f'operation "o{g}i2": ')
    for g in UNIQUE_BROKEN:
        assert outcomes(response, *group_ids(g)) == [ROLLED_BACK] * 4 + [FAILED]
        failed = results[f"o{g}i3"]
        assert code(failed) == grpc.StatusCode.ALREADY_EXISTS
        assert from_rpc_status(failed.status).error_info["constraint"] == "order_items_pkey"
    for g in CHECK_BROKEN | UNIQUE_BROKEN:
        first, failing = f"o{g}", f"o{g}i2" if g in CHECK_BROKEN else f"o{g}i3"
        # As in a failed atomic batch: rolled-back operations show no rows (they are gone).
        assert not results[first].rows and results[first].rows_affected == 0
        assert code(results[first]) == grpc.StatusCode.ABORTED
        assert results[first].status.message == f'rolled back: operation "{failing}" failed'
    if CHECK_BROKEN:
        last = results[f"o{min(CHECK_BROKEN)}i3"]
        assert last.status.message == f'not run: operation "o{min(CHECK_BROKEN)}i2" failed'
    # Exactly the good groups, whole: their orders (beside the one made above) and 4 items each.
    assert await count(db, "orders") == len(good) + 1
    assert await count(db, "order_items") == 4 * len(good) + 1


async def test_a_group_is_one_transaction_and_each_group_its_own(stub):
    response = await stub.BatchExecute(batch([
        {"id": "a1", "group": "A", "call": {"handler": "tx_info"}},
        {"id": "lone", "call": {"handler": "tx_info"}},
        {"id": "b1", "group": "B", "call": {"handler": "tx_info"}},
        {"id": "a2", "group": "A", "call": {"handler": "tx_info"}},
        {"id": "b2", "group": "B", "call": {"handler": "tx_info"}},
    ], **INDEPENDENT))
    txid = {r.id: rows(r)[0]["txid"] for r in response.results}
    assert txid["a1"] == txid["a2"] and txid["b1"] == txid["b2"]
    assert len({txid["a1"], txid["b1"], txid["lone"]}) == 3


async def test_groups_run_concurrently(stub, db):
    # A barrier: the test holds an advisory lock that the first operation of every group waits
    # for. Four waiters at once can only be seen if the four groups really run concurrently.
    key = 434343
    await db.execute("SELECT pg_advisory_lock($1)", key)
    try:
        call = asyncio.ensure_future(stub.BatchExecute(batch([
            op for g in range(4) for op in (
                {"id": f"w{g}", "group": f"g{g}", "call": {"handler": "wait_for_lock",
                                                           "args": {"key": key}}},
                {"id": f"e{g}", "group": f"g{g}", "call": {"handler": "echo"}})],
            **INDEPENDENT)))
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
    assert [r.outcome for r in response.results] == [SUCCEEDED] * 8


async def test_references_across_groups_order_them_wherever_they_are_listed(stub, db):
    # The orders' groups come first but refer to the customer made by group "who".
    made_by_who = {"customer_id": {"$ref": "cust.id"}}
    response = await stub.BatchExecute(batch([
        *order_with_items("x", **made_by_who), *order_with_items("y", **made_by_who),
        {"id": "note", "group": "gx", "update": {
            "table": "orders", "key": {"id": {"$ref": "ox.id"}}, "set": {"status": "noted"}}},
        {"id": "cust", "group": "who", "insert": {"table": "customers", "rows": [
            {"name": "Grace", "email": "grace@x"}]}},
        {"id": "check", "group": "who", "get": {"table": "customers",
                                                 "key": {"id": {"$ref": "cust.id"}}}},
    ], **INDEPENDENT))
    assert all(r.outcome == SUCCEEDED for r in response.results), response
    customer_id = int(rows(by_id(response)["cust"])[0]["id"])
    assert {r["customer_id"] for r in await db.fetch("SELECT customer_id FROM orders")} == {
        customer_id}
    assert await db.fetchval("SELECT status FROM orders WHERE id = $1",
                             int(rows(by_id(response)["ox"])[0]["id"])) == "noted"
    assert await count(db, "order_items") == 8


async def test_a_failed_group_skips_the_groups_and_operations_that_depend_on_it(stub, db):
    await customer_one(db)
    response = await stub.BatchExecute(batch([
        *order_with_items("bad", {1: {"quantity": -1}}),
        # depends_on a member that FAILED; a reference to one that was ROLLED_BACK.
        {"id": "after", "group": "later", "depends_on": ["obadi1"],
         "call": {"handler": "echo"}},
        {"id": "after2", "group": "later", "call": {"handler": "echo"}},
        {"id": "uses", "group": "other", "update": {
            "table": "orders", "key": {"id": {"$ref": "obad.id"}}, "set": {"status": "x"}}},
        {"id": "lone", "depends_on": ["after2"], "call": {"handler": "echo"}},
        *order_with_items("fine"),
    ], **INDEPENDENT))
    assert response.committed
    results = by_id(response)
    assert outcomes(response, *group_ids("bad")) == [
        ROLLED_BACK, ROLLED_BACK, FAILED, NOT_RUN,
        NOT_RUN]
    assert outcomes(response, "after", "after2", "uses", "lone") == [SKIPPED] * 4
    for op_id, failed_dep, group in [("after", "obadi1", "later"),
                                     ("after2", "obadi1", "later"), ("uses", "obad", "other")]:
        status = results[op_id].status
        assert code(results[op_id]) == grpc.StatusCode.FAILED_PRECONDITION
        assert status.message == (f'operation "{op_id}": not run: operation "{failed_dep}" did '
                                  f'not succeed (group "{group}" depends on it)')
        error = from_rpc_status(status)
        assert error.reason == "DEPENDENCY_NOT_SUCCEEDED"
        assert error.error_info["operation_id"] == op_id
    assert results["lone"].status.message == \
        'operation "lone": not run: operation "after2" did not succeed'
    assert outcomes(response, *group_ids("fine")) == [SUCCEEDED] * 5
    assert await count(db, "orders") == 1 and await count(db, "order_items") == 4


async def test_an_invalid_operation_refuses_its_group_before_it_runs(stub, db):
    await customer_one(db)
    response = await stub.BatchExecute(batch([
        order("g"), item("g", 0, nope=1), item("g", 1),
        {"id": "fine", "insert": {"table": "customers", "rows": [{"name": "f",
                                                                   "email": "f@x"}]}},
    ], **INDEPENDENT))
    assert outcomes(response, "og", "ogi0", "ogi1", "fine") == [
        NOT_RUN, FAILED, NOT_RUN, SUCCEEDED]
    results = by_id(response)
    assert code(results["ogi0"]) == grpc.StatusCode.INVALID_ARGUMENT
    assert results["og"].status.message == 'not run: operation "ogi0" failed'
    assert await count(db, "orders") == 0 and await count(db, "customers") == 2


async def test_a_serialization_failure_reruns_the_group_whole(stub, db):
    await customer_one(db)
    key = f"group-{uuid.uuid4()}"
    response = await stub.BatchExecute(batch([
        order("r"), item("r", 0),
        {"id": "conflict", "group": "gr", "call": {"handler": "fail_serialization",
                                                   "args": {"key": key, "times": 2}}},
        item("r", 1),
    ], **INDEPENDENT))
    assert [r.outcome for r in response.results] == [SUCCEEDED] * 4
    assert response.attempts == 3
    assert handlers.serialization_failures[key] == 2
    # Only the third run left rows behind: one order, its two items.
    assert await count(db, "orders") == 1 and await count(db, "order_items") == 2
    order_id = int(rows(by_id(response)["or"])[0]["id"])
    assert await db.fetchval("SELECT count(*) FROM order_items WHERE order_id = $1",
                             order_id) == 2


async def test_a_group_rerun_after_a_concurrent_update_reports_its_attempts(stub, db, schema):
    """A real serialization failure, forced: the group takes its REPEATABLE READ snapshot and
    waits on an advisory lock the test holds; meanwhile another transaction updates the row
    the group then updates (40001: concurrent update). The rerun finds the lock free."""
    lock = 616161
    await db.execute("SELECT pg_advisory_lock($1)", lock)
    try:
        running = asyncio.ensure_future(stub.BatchExecute(batch([
            {"id": "wait", "group": "g", "call": {"handler": "wait_for_lock",
                                                  "args": {"key": lock}}},
            {"id": "take", "group": "g", "update": {"table": "products", "key": {"id": 1},
                                                    "set": {"stock": 90}}},
            {"id": "lone", "call": {"handler": "echo", "args": {}}},
        ], isolation="ISOLATION_LEVEL_REPEATABLE_READ", **INDEPENDENT)))
        for _ in range(400):  # until the group waits on the lock, its snapshot taken
            if await db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                 "AND objid = $1 AND NOT granted", lock):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the group never waited on the lock")
        other = await asyncpg.connect(schema)
        try:
            await other.execute("UPDATE products SET stock = 99 WHERE id = 1")  # committed
        finally:
            await other.close()
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", lock)
    response = await running
    assert [r.outcome for r in response.results] == [SUCCEEDED] * 3
    assert response.attempts == 2  # the group's: the lone operation ran once
    assert await db.fetchval("SELECT stock FROM products WHERE id = 1") == 90


async def test_a_group_that_keeps_failing_to_serialize_is_aborted_and_a_lone_one_not_rerun(
        stub, db):
    await customer_one(db)
    group_key, lone_key = f"group-{uuid.uuid4()}", f"lone-{uuid.uuid4()}"
    response = await stub.BatchExecute(batch([
        order("r"),
        {"id": "conflict", "group": "gr", "call": {"handler": "fail_serialization",
                                                   "args": {"key": group_key, "times": 100}}},
        {"id": "lone", "call": {"handler": "fail_serialization",
                                "args": {"key": lone_key, "times": 1}}},
    ], **INDEPENDENT))
    assert outcomes(response, "or", "conflict", "lone") == [
        ROLLED_BACK, FAILED, FAILED]
    results = by_id(response)
    assert code(results["conflict"]) == grpc.StatusCode.ABORTED
    assert from_rpc_status(results["conflict"].status).error_info["sqlstate"] == "40001"
    assert handlers.serialization_failures[group_key] == 4  # one run and three reruns
    assert response.attempts == 4
    # Outside a group an operation is not rerun (as before groups): ABORTED, the client's call.
    assert code(results["lone"]) == grpc.StatusCode.ABORTED
    assert handlers.serialization_failures[lone_key] == 1
    assert await count(db, "orders") == 0


async def test_a_failing_commit_fails_every_operation_of_the_group(stub, db):
    # A deferred constraint trigger: the group's statements all succeed, its COMMIT fails.
    await db.execute("""
        CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation'; END $$;
        CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON events
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.kind = 'refuse')
        EXECUTE FUNCTION refuse_at_commit();""")
    try:
        response = await stub.BatchExecute(batch([
            {"id": "c", "group": "g", "insert": {"table": "customers", "rows": [
                {"name": "c", "email": "c@x"}]}},
            {"id": "e", "group": "g", "insert": {"table": "events", "rows": [
                {"id": 1, "kind": "refuse"}]}},
            {"id": "after", "depends_on": ["c"], "call": {"handler": "echo"}},
            # Outside a group too: an operation whose COMMIT fails did not succeed.
            {"id": "lone", "insert": {"table": "events", "rows": [{"id": 2, "kind": "refuse"}]}},
            {"id": "after_lone", "depends_on": ["lone"], "call": {"handler": "echo"}},
        ], **INDEPENDENT))
    finally:
        await db.execute("DROP TRIGGER refuse_at_commit ON events; "
                         "DROP FUNCTION refuse_at_commit()")
    results = by_id(response)
    assert outcomes(response, "c", "e", "after", "lone", "after_lone") == [
        FAILED, FAILED, SKIPPED, FAILED, SKIPPED]
    for op_id in ("c", "e", "lone"):
        assert code(results[op_id]) == grpc.StatusCode.INVALID_ARGUMENT
        assert results[op_id].status.message == f'operation "{op_id}": refused at commit'
        assert from_rpc_status(results[op_id].status).error_info["operation_id"] == op_id
    assert not response.committed
    assert await count(db, "customers") == 0 and await count(db, "events") == 0


async def test_validate_only_reports_groups_as_for_real_and_commits_nothing(stub, db):
    await customer_one(db)
    ops = [
        *order_with_items("ok"),
        *order_with_items("bad", {2: {"quantity": 0}}),
        {"id": "uses_ok", "group": "u", "get": {"table": "orders",
                                                "key": {"id": {"$ref": "ook.id"}}}},
        {"id": "uses_bad", "group": "v", "depends_on": ["obad"], "call": {"handler": "echo"}},
    ]
    dry = await stub.BatchExecute(batch(ops, validate_only=True, **INDEPENDENT))
    assert not dry.committed
    expected = {**dict.fromkeys(group_ids("ok"), SUCCEEDED),
                "obad": ROLLED_BACK, "obadi0": ROLLED_BACK,
                "obadi1": ROLLED_BACK, "obadi2": FAILED,
                "obadi3": NOT_RUN, "uses_ok": SUCCEEDED,
                "uses_bad": SKIPPED}
    assert {r.id: r.outcome for r in dry.results} == expected
    # The dependent group saw the order its dependency wrote (under the same transaction).
    assert rows(by_id(dry)["uses_ok"])[0]["id"] == rows(by_id(dry)["ook"])[0]["id"]
    assert await count(db, "orders") == 0 and await count(db, "order_items") == 0
    real = await stub.BatchExecute(batch(ops, **INDEPENDENT))
    assert {r.id: r.outcome for r in real.results} == expected
    assert await count(db, "orders") == 1 and await count(db, "order_items") == 4


async def test_a_request_id_replays_the_groups_answer_without_running_again(stub, db):
    await customer_one(db)
    request = batch([*order_with_items("a"), *order_with_items("b", {0: {"quantity": 0}})],
                    request_id=f"test:{uuid.uuid4()}", **INDEPENDENT)
    first = await stub.BatchExecute(request)
    assert outcomes(first, *group_ids("a")) == [SUCCEEDED] * 5
    assert outcomes(first, "ob", "obi0") == [ROLLED_BACK, FAILED]
    again = await stub.BatchExecute(request)
    assert again.replayed and list(again.results) == list(first.results)
    assert await count(db, "orders") == 1 and await count(db, "order_items") == 4


async def test_groups_are_refused_in_an_atomic_batch(stub, db):
    failure = await fails(stub, batch([
        {"id": "c", "insert": {"table": "customers", "rows": [{"name": "c", "email": "c@x"}]}},
        {"id": "e", "group": "g", "call": {"handler": "echo"}},
    ]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.violations == [("operations[1].group", "groups apply to MODE_INDEPENDENT "
                                   "(an atomic batch is one transaction already)")]
    assert await count(db, "customers") == 0


async def test_a_cycle_between_groups_is_refused_before_anything_runs(stub, db):
    failure = await fails(stub, batch([
        {"id": "a1", "group": "A", "depends_on": ["b1"], "call": {"handler": "echo"}},
        {"id": "b1", "group": "B", "call": {"handler": "echo"}},
        {"id": "b2", "group": "B", "depends_on": ["a2"], "call": {"handler": "echo"}},
        {"id": "a2", "group": "A", "insert": {"table": "customers", "rows": [
            {"name": "a", "email": "a@x"}]}},
    ], **INDEPENDENT))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.violations == [("operations[0].group",
                                   "dependency cycle among groups ['A', 'B']")]
    assert await count(db, "customers") == 0


async def test_groups_are_refused_in_an_operations_feed(stub, db):
    # A feed's chunk is run as an atomic batch: a group there means nothing, so it is refused.
    call = stub.BatchStream()
    await call.write(batch_pb2.BatchStreamRequest(header=batch_pb2.StreamHeader()))
    assert (await call.read()).WhichOneof("kind") == "opened"
    chunk = json_format.ParseDict({"sequence": 1, "operations": [
        {"id": "c", "group": "g", "insert": {"table": "customers", "rows": [
            {"name": "c", "email": "c@x"}]}}]}, batch_pb2.StreamChunk())
    await call.write(batch_pb2.BatchStreamRequest(chunk=chunk))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "operations[0].group: groups apply to MODE_INDEPENDENT" in caught.value.details()
    assert await count(db, "customers") == 0
