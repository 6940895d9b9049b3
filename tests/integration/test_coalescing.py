"""Consecutive inserts into one table coalesce into one statement, each keeping its result.

Rows written by one statement share their ``cmin`` (the command id within the transaction),
which is how these tests see whether inserts were coalesced.
"""

from __future__ import annotations

import grpc

from batchd.app import App
from batchd.v1 import batch_pb2_grpc
from tests.support.batches import FAILED, NOT_RUN, ROLLED_BACK, batch, fails, rows
from tests.support.servers import make_settings


def customer(i: int, **extra) -> dict:
    return {"id": f"c{i}", "insert": {"table": "customers", "rows": [
        {"name": f"n{i}", "email": f"e{i}@x"}], **extra}}


async def statements(db, table: str) -> list[int]:
    """The distinct command ids that wrote the table's rows, in id order."""
    cmins = [r["cmin"] for r in await db.fetch(f"SELECT cmin::text::int FROM {table} ORDER BY id")]
    return list(dict.fromkeys(cmins))


async def test_one_row_inserts_share_one_statement_and_keep_their_own_results(stub, db):
    response = await stub.BatchExecute(batch([customer(i) for i in range(200)]))
    ids = [rows(r)[0]["id"] for r in response.results]
    assert ids == [str(i) for i in range(1, 201)]
    assert all(r.rows_affected == 1 for r in response.results)
    assert len(await statements(db, "customers")) == 1
    emails = [r["email"] for r in await db.fetch("SELECT email FROM customers ORDER BY id")]
    assert emails == [f"e{i}@x" for i in range(200)]


async def test_references_to_earlier_operations_resolve_in_a_coalesced_run(stub, db):
    response = await stub.BatchExecute(batch([
        {"id": "o", "insert": {"table": "customers", "rows": [{"name": "o", "email": "o@x"}]}},
        {"id": "other", "get": {"table": "customers", "key": {"id": {"$ref": "o.id"}}}},
        *[{"id": f"t{i}", "insert": {"table": "all_types", "rows": [
            {"id": i, "i8": {"$ref": "o.id"}, "label": f"l{i}"}]}} for i in range(5)],
    ]))
    assert [rows(r)[0]["id"] for r in response.results[2:]] == ["0", "1", "2", "3", "4"]
    assert {r["i8"] for r in await db.fetch("SELECT i8 FROM all_types")} == {1}
    assert len(await statements(db, "all_types")) == 1


async def test_an_insert_referring_to_its_own_run_starts_a_new_statement(stub, db):
    await stub.BatchExecute(batch([
        {"id": "a", "insert": {"table": "all_types", "rows": [{"id": 1, "label": "a"}]}},
        {"id": "b", "insert": {"table": "all_types", "rows": [{"id": 2, "i8": {"$ref": "a.id"},
                                                               "label": "b"}]}},
        {"id": "c", "insert": {"table": "all_types", "rows": [{"id": 3, "i8": 5,
                                                               "label": "c"}]}},
    ]))
    assert await db.fetchval("SELECT i8 FROM all_types WHERE id = 2") == 1
    assert len(await statements(db, "all_types")) == 2  # a | b, c


async def test_different_columns_or_conflict_handling_are_not_coalesced(stub, db):
    await stub.BatchExecute(batch([
        customer(1), customer(2),
        {"id": "named", "insert": {"table": "customers", "rows": [
            {"id": 100, "name": "x", "email": "x@x"}]}},
        customer(3, on_conflict={"action": "ACTION_DO_NOTHING"}), customer(4),
    ]))
    # c1 c2 | named | c3 | c4, where c1 c2 and named are two parts of one statement of CTEs
    # (batchd.batch.chain), which share their command id.
    assert len(await statements(db, "customers")) == 3
    assert await db.fetchval("SELECT count(DISTINCT cmin::text::int) FROM customers "
                             "WHERE name IN ('n1', 'n2', 'x')") == 1


async def test_a_failing_coalesced_run_names_the_operation_that_failed(stub, db):
    ops = [customer(i) for i in range(10)]
    ops[6]["insert"]["rows"][0]["email"] = "e2@x"  # duplicate of operation c2
    failure = await fails(stub, batch(ops))
    assert failure.code == grpc.StatusCode.ALREADY_EXISTS
    assert failure.error_info["operation_id"] == "c6"
    outcomes = failure.outcomes()
    assert [outcomes[f"c{i}"] for i in range(10)] == (
        [ROLLED_BACK] * 6 + [FAILED] + [NOT_RUN] * 3)
    assert await db.fetchval("SELECT count(*) FROM customers") == 0


async def test_validate_only_coalesces_and_rolls_back(stub, db):
    response = await stub.BatchExecute(batch([customer(i) for i in range(20)],
                                             validate_only=True))
    assert not response.committed
    assert [rows(r)[0]["id"] for r in response.results] == [str(i) for i in range(1, 21)]
    assert await db.fetchval("SELECT count(*) FROM customers") == 0


async def test_a_batch_of_inserts_and_a_get_takes_four_round_trips(schema):
    """BEGIN with the transaction's limits, the inserts as one statement (no savepoint: on a
    failure the batch runs again apart), the get, COMMIT."""
    app = await App.start(make_settings(schema, pool_min_size=1, pool_max_size=1))
    sent: list[str] = []
    try:
        async with app.pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            sent.clear()
            response = await stub.BatchExecute(batch([
                *(customer(i) for i in range(5)),
                {"id": "g", "get": {"table": "products", "key": {"id": 1}}}]))
    finally:
        await app.stop(grace=1)
    assert response.committed
    # (The pool's reset of the connection on its way back is not part of the batch.)
    statements = [q for q in sent if not q.startswith("SELECT pg_advisory_unlock_all()")]
    assert [q.split()[0].rstrip(";") for q in statements] == \
        ["BEGIN", "INSERT", "SELECT", "COMMIT"], sent
