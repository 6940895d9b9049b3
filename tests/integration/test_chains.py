"""Inserts that refer to each other go to PostgreSQL as one statement (batchd.batch.chain), and
nothing a caller can see tells it from statement by statement.

Rows written by one statement share their ``cmin`` (the command id within the transaction):
that is how these tests see which inserts shared one.
"""

from __future__ import annotations

import grpc

from tests.support.batches import FAILED, NOT_RUN, ROLLED_BACK, batch, count, fails, rows


async def command_ids(db, *tables: str) -> list[int]:
    """The distinct command ids that wrote the rows of ``tables``, in the order of the tables
    (and of ids within one)."""
    found: list[int] = []
    for table in tables:
        found += [r["cmin"] for r in await db.fetch(
            f"SELECT cmin::text::int FROM {table} ORDER BY id")]
    return list(dict.fromkeys(found))


def order_with_items(tag: str, quantities: list[int]) -> list[dict]:
    """A customer, an order referring to it, and items referring to the order."""
    return [
        {"id": "c", "insert": {"table": "customers",
                               "rows": [{"name": tag, "email": f"{tag}@example.com"}]}},
        {"id": "o", "insert": {"table": "orders", "returning": ["id", "customer_id", "status"],
                               "rows": [{"customer_id": {"$ref": "c.id"}, "total": "5.00"}]}},
        *[{"id": f"i{n}", "insert": {"table": "order_items", "rows": [
            {"order_id": {"$ref": "o.id"}, "product_id": 1, "quantity": q, "unit_price": "2"}]}}
          for n, q in enumerate(quantities)],
    ]


async def test_inserts_referring_to_each_other_are_one_statement_with_every_result(stub, db):
    response = await stub.BatchExecute(batch(order_with_items("one", [1, 2, 3])))
    assert response.committed
    customer = rows(response.results[0])[0]["id"]
    order = rows(response.results[1])[0]
    assert order["customer_id"] == customer and order["status"] == "new"
    items = [rows(r)[0]["id"] for r in response.results[2:]]
    assert [r.rows_affected for r in response.results] == [1] * 5
    assert [r.columns[0].name for r in response.results] == ["id"] * 5
    stored = await db.fetch("SELECT id, order_id, quantity FROM order_items ORDER BY id")
    assert [(str(r["id"]), str(r["order_id"]), r["quantity"]) for r in stored] == [
        (items[0], order["id"], 1), (items[1], order["id"], 2), (items[2], order["id"], 3)]
    assert len(await command_ids(db, "customers", "orders", "order_items")) == 1


async def test_a_failing_chain_names_the_operation_that_failed(stub, db):
    failure = await fails(stub, batch(order_with_items("bad", [1, 0, 2])))  # CHECK quantity > 0
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.error_info["operation_id"] == "i1"
    assert failure.outcomes() == {"c": ROLLED_BACK, "o": ROLLED_BACK, "i0": ROLLED_BACK,
                                  "i1": FAILED, "i2": NOT_RUN}
    assert await count(db, "customers") == 0 and await count(db, "order_items") == 0


async def test_an_insert_into_a_table_an_earlier_insert_refers_to_is_not_in_its_statement(
        stub, db):
    """Statement by statement, an order naming a customer that the next operation inserts
    fails its foreign key. In one statement both rows would exist when the key is checked
    (at the statement's end), and it would pass: the customer's insert starts a statement of
    its own, and the order fails as it always did."""
    failure = await fails(stub, batch([
        {"id": "o", "insert": {"table": "orders", "rows": [{"customer_id": 777, "total": "1"}]}},
        {"id": "c", "insert": {"table": "customers",
                               "rows": [{"id": 777, "name": "late", "email": "late@x"}]}},
    ]))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.error_info["operation_id"] == "o"
    assert await count(db, "orders") == 0

    # The other way round, the order follows its customer in one statement.
    await stub.BatchExecute(batch([
        {"id": "c", "insert": {"table": "customers",
                               "rows": [{"id": 777, "name": "first", "email": "first@x"}]}},
        {"id": "o", "insert": {"table": "orders", "rows": [{"customer_id": 777, "total": "1"}]}},
    ]))
    assert len(await command_ids(db, "customers", "orders")) == 1


async def test_an_insert_into_a_table_with_a_trigger_sees_what_earlier_inserts_wrote(stub, db):
    """audited's trigger counts the customers as its row is inserted (tests/support/schema.sql): in
    one statement with the customer's insert it would not see that customer."""
    response = await stub.BatchExecute(batch([
        {"id": "c", "insert": {"table": "customers",
                               "rows": [{"name": "seen", "email": "seen@x"}]}},
        {"id": "a", "insert": {"table": "audited", "returning": ["customers_seen"],
                               "rows": [{"id": 1}]}},
    ]))
    assert rows(response.results[1]) == [{"customers_seen": "1"}]
    assert len(await command_ids(db, "customers", "audited")) == 2


async def test_references_a_chain_cannot_hold_are_resolved_between_statements(stub, db):
    """A reference to the second row of an insert, and one to a column of another type
    (integer into bigint), end the chain; their values are what they always were."""
    response = await stub.BatchExecute(batch([
        {"id": "two", "insert": {"table": "customers", "rows": [
            {"name": "a", "email": "a@x"}, {"name": "b", "email": "b@x"}]}},
        {"id": "o", "insert": {"table": "orders", "returning": ["id", "customer_id", "version"],
                               "rows": [{"customer_id": {"$ref": "two.1.id"}, "total": "1"}]}},
        {"id": "e", "insert": {"table": "all_types", "rows": [
            {"id": {"$ref": "o.version"}, "label": "version as a key"}]}},
    ]))
    order = rows(response.results[1])[0]
    assert order["customer_id"] == rows(response.results[0])[1]["id"]
    assert order["version"] == 1 and rows(response.results[2]) == [{"id": "1"}]
    assert len(await command_ids(db, "customers", "orders", "all_types")) == 3


async def test_a_large_insert_is_not_chained_and_keeps_its_statements(stub, db):
    """An insert of more rows than one statement takes (ROWS_PER_STATEMENT) is cut into
    statements of its own, chain or not: encoding its parameters at once would stall the
    event loop."""
    response = await stub.BatchExecute(batch([
        {"id": "c", "insert": {"table": "customers", "rows": [{"name": "big", "email": "b@x"}]}},
        {"id": "o", "insert": {"table": "orders", "rows": [
            {"customer_id": {"$ref": "c.id"}, "total": str(i)} for i in range(1001)]}},
    ]))
    assert response.results[1].rows_affected == 1001
    assert len(await command_ids(db, "customers", "orders")) == 3  # c | 1,000 rows | 1 row
