"""batchd.client: the builder, typed results and errors, against the real server (the value
mapping and builder rules are unit tests: tests/unit/test_builder.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal

import grpc
import pytest

from batchd.client import (
    AsyncClient,
    AtomicBatchError,
    Batch,
    BatchdRpcError,
    Client,
    FieldViolation,
    any_of,
    not_,
)
from tests.support.ports import free_port


@pytest.fixture
async def client(app):
    async with AsyncClient(f"127.0.0.1:{app.port}", timeout=30) as c:
        yield c


# --- against the server --------------------------------------------------------------------

async def test_builder_references_commit_customer_order_and_items(client, db):
    b = Batch()
    customer = b.insert("customers", {"name": "Ada", "email": "ada@example.com"})
    order = b.insert("orders", {"customer_id": customer.ref("id"), "total": Decimal("69.89")},
                     returning=["id", "customer_id", "version"])
    items = b.insert("order_items", [
        {"order_id": order.ref("id"), "product_id": 1, "quantity": 1, "unit_price": "49.90"},
        {"order_id": order.ref("id"), "product_id": 2, "quantity": 1,
         "unit_price": Decimal("19.99")},
    ], returning=["order_id", "unit_price"])
    result = await client.execute(b)
    assert result.committed and result.ok and result.attempts == 1
    assert [o.id for o in result] == ["op1", "op2", "op3"]
    assert result[order].row == {"id": 1, "customer_id": result[customer].rows[0]["id"],
                                 "version": 1}
    assert result[items].rows == [{"order_id": 1, "unit_price": Decimal("49.90")},
                                  {"order_id": 1, "unit_price": Decimal("19.99")}]
    assert result[items].rows_affected == 2
    assert result[items].code == grpc.StatusCode.OK
    stored = await db.fetch("SELECT o.total::text, c.email FROM orders o "
                            "JOIN customers c ON c.id = o.customer_id")
    assert [tuple(r) for r in stored] == [("69.89", "ada@example.com")]
    assert await db.fetchval("SELECT count(*) FROM order_items WHERE order_id = 1") == 2


async def test_results_are_indexable_by_id_handle_and_position(client):
    b = Batch()
    first = b.call("echo", {"n": 1}, id="first")
    second = b.call("echo", {"n": 2})
    result = await client.execute(b)
    assert result["first"] is result[first] is result[0]
    assert result[second].id == "op2" and result[1].row == {"n": 2}
    assert result.outcomes == {"first": "SUCCEEDED", "op2": "SUCCEEDED"}
    with pytest.raises(KeyError):
        result["nope"]


async def test_sync_client_runs_a_batch_and_reads_the_schema(app, db):
    # The server runs on this test's event loop: the blocking client must run in a thread.
    def run():
        with Client(f"127.0.0.1:{app.port}", timeout=30) as client:
            b = Batch()
            c = b.insert("customers", {"name": "Sync", "email": "sync@example.com"},
                         returning=["id", "name"])
            return client.execute(b)[c], client.schema()

    outcome, schema = await asyncio.to_thread(run)
    assert outcome.outcome == "SUCCEEDED" and outcome.row == {"id": 1, "name": "Sync"}
    orders = schema.table("orders")
    assert orders.name == "public.orders" and orders.primary_key == ["id"]
    assert (orders.version_column, orders.soft_delete_column) == ("version", "deleted_at")
    assert orders.column("total").type == "numeric(12,2)"
    assert schema.table("customers").version_column is None
    assert "reserve_stock" in schema.handlers
    assert await db.fetchval("SELECT name FROM customers") == "Sync"


async def test_atomic_unique_violation_raises_with_every_outcome_and_operation_id(client, db):
    b = Batch()
    bob = b.insert("customers", {"name": "Bob", "email": "dup@example.com"}, id="bob")
    b.insert("customers", {"name": "Bob again", "email": "dup@example.com"}, id="again")
    never = b.get("customers", {"id": bob.ref("id")}, id="never")
    with pytest.raises(AtomicBatchError) as caught:
        await client.execute(b)
    err = caught.value
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.operation_id == "again"
    assert err.reason == "UNIQUE_VIOLATION"
    assert err.error_info["constraint"] == "customers_email_key"
    assert err.error_info["sqlstate"] == "23505"
    assert 'operation "again"' in err.message and "rolled back" in err.message
    assert str(err).startswith("ALREADY_EXISTS: ")
    assert err.outcomes.outcomes == {"bob": "ROLLED_BACK", "again": "FAILED",
                                     "never": "NOT_RUN"}
    assert not err.outcomes.committed
    assert err.outcomes[bob].rows == [] and err.outcomes[bob].code == grpc.StatusCode.ABORTED
    assert err.outcomes["again"].code == grpc.StatusCode.ALREADY_EXISTS
    assert err.outcomes["again"].error_info["operation_id"] == "again"
    assert err.outcomes[never].code == grpc.StatusCode.ABORTED
    assert isinstance(err, BatchdRpcError)
    assert await db.fetchval("SELECT count(*) FROM customers") == 0


async def test_invalid_batch_raises_atomic_error_with_field_violations(client, db):
    b = Batch()
    b.insert("customers", {"name": "Ok", "email": "ok@example.com"}, id="ok")
    b.insert("products", {"sku": "X", "name": "x", "price": True}, id="bad")
    with pytest.raises(AtomicBatchError) as caught:
        await client.execute(b)
    err = caught.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.outcomes.outcomes == {"ok": "NOT_RUN", "bad": "FAILED"}
    assert err.field_violations == [FieldViolation(
        "operations[1].insert.rows[0].price",
        "expected a decimal string or number, got bool (column price, numeric(12,2))")]
    assert await db.fetchval("SELECT count(*) FROM customers") == 0


async def test_independent_mode_returns_each_outcome_without_raising(client, db):
    await db.execute("INSERT INTO customers (name, email) VALUES ('x', 'taken@example.com')")
    b = Batch()
    taken = b.insert("customers", {"name": "y", "email": "taken@example.com"})
    order = b.insert("orders", {"customer_id": taken.ref("id")})
    free = b.insert("customers", {"name": "z", "email": "free@example.com"})
    after = b.call("echo", {"ok": True}, depends_on=[order])
    result = await client.execute(b, mode="independent")
    assert result.committed and not result.ok
    assert result.outcomes == {taken.id: "FAILED", order.id: "SKIPPED", free.id: "SUCCEEDED",
                               after.id: "SKIPPED"}
    assert result[taken].code == grpc.StatusCode.ALREADY_EXISTS
    assert result[taken].reason == "UNIQUE_VIOLATION"
    assert result[order].code == grpc.StatusCode.FAILED_PRECONDITION
    assert f'"{taken.id}" did not succeed' in result[order].message
    assert await db.fetchval("SELECT count(*) FROM customers") == 2


async def test_bigint_beyond_2_53_and_decimal_round_trip_exactly(client, db):
    big = 2**62 + 1
    amount = Decimal("12345678901234567890.123456789012345678")
    b = Batch()
    row = b.insert("all_types", {"id": 1, "i8": big, "num": amount, "money": Decimal("1E+1")},
                   returning=["i8", "num", "money"])
    found = b.query("all_types", [("i8", "eq", big), ("num", ">=", amount)], columns=["id"])
    result = await client.execute(b)
    assert result[row].row == {"i8": big, "num": amount, "money": Decimal("10.00")}
    assert str(result[row].row["money"]) == "10.00"  # the column's scale, as asyncpg gives it
    assert result[found].rows == [{"id": 1}]
    assert result.to_dict()["results"][0]["rows"] == [  # the wire keeps exact types as strings
        {"i8": str(big), "num": str(amount), "money": "10.00"}]
    stored = await db.fetchrow("SELECT i8, num FROM all_types WHERE id = 1")
    assert (stored["i8"], stored["num"]) == (big, amount)


async def test_python_dates_uuids_bytes_and_durations_are_stored_exactly(client, db):
    at = dt.datetime(2024, 2, 29, 23, 59, 59, 123456,
                     tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    uid = uuid.UUID("6f1e4b1c-9a3b-4c8e-8f2e-0d9b1a7c5e33")
    blob = bytes(range(256))
    b = Batch()
    b.insert("all_types", {"id": 2, "at": at, "local_at": dt.datetime(2024, 1, 2, 3, 4, 5, 6),
                           "day": dt.date(2024, 2, 29), "uid": uid, "blob": blob,
                           "span": dt.timedelta(days=1, seconds=3661, microseconds=500000),
                           "docb": {"nested": [1, None, "x"]}, "ids": [2**53 + 1, 1]})
    got = b.get("all_types", {"id": 2}, ["at", "day", "uid", "blob", "span", "docb", "ids"])
    row = (await client.execute(b))[got].row
    assert row == {"at": at, "day": dt.date(2024, 2, 29), "uid": uid, "blob": blob,
                   "span": dt.timedelta(days=1, seconds=3661, microseconds=500000),
                   "docb": {"nested": [1, None, "x"]}, "ids": [2**53 + 1, 1]}
    assert row["at"].tzinfo == dt.UTC  # as asyncpg gives a timestamptz
    stored = await db.fetchrow("SELECT at, local_at, blob FROM all_types WHERE id = 2")
    assert stored["at"] == at and stored["blob"] == blob
    assert stored["local_at"] == dt.datetime(2024, 1, 2, 3, 4, 5, 6)


async def test_query_filters_order_and_pages(client, db):
    await db.execute("INSERT INTO customers (id, name, email) VALUES (1, 'a', 'a@x'), "
                     "(2, 'b', 'b@x'), (3, 'c', 'c@y'), (4, 'd', 'd@x')")
    b = Batch()
    page = b.query("customers", [("email", "like", "%@x"), ("id", "in", [1, 2, 4])],
                   order_by=["-name"], limit=2, columns=["name"])
    first = (await client.execute(b))[page]
    assert first.rows == [{"name": "d"}, {"name": "b"}] and first.next_page_token
    b = Batch()
    page = b.query("customers", [("email", "like", "%@x"), ("id", "in", [1, 2, 4])],
                   order_by=["-name"], limit=2, columns=["name"],
                   page_token=first.next_page_token)
    second = (await client.execute(b))[page]
    assert second.rows == [{"name": "a"}] and not second.next_page_token


async def test_query_where_groups_ilike_and_count_through_the_builder(client, db):
    await db.execute("INSERT INTO customers (id, name, email) VALUES (1, 'Ann', 'a@x'), "
                     "(2, 'bob', 'b@X'), (3, 'ANNA', 'c@y'), (4, 'd', 'd@x')")
    b = Batch()
    page = b.query("customers", where=any_of(("name", "ilike", "ann%"),
                                             not_(("email", "like", "%@x"))),
                   order_by=["id"], limit=2, columns=["id"], count=True)
    first = (await client.execute(b))[page]
    assert first.rows == [{"id": 1}, {"id": 2}] and first.total_count == 3
    b = Batch()
    plain = b.query("customers", columns=["id"])
    assert (await client.execute(b))[plain].total_count is None


async def test_upsert_and_optimistic_locking_through_the_builder(client, db):
    await db.execute("INSERT INTO customers (id, name, email) VALUES (1, 'old', 'a@x')")
    await db.execute("INSERT INTO orders (id, customer_id) VALUES (1, 1)")
    b = Batch()
    upsert = b.insert("customers", {"name": "new", "email": "a@x"},
                      on_conflict=("update", ["name"]), conflict_columns=["email"],
                      returning=["id", "name"])
    pay = b.update("orders", key={"id": 1}, set={"status": "paid"}, expected_version=1,
                   returning=["status", "version"])
    result = await client.execute(b)
    assert result[upsert].row == {"id": 1, "name": "new"}
    assert result[pay].row == {"status": "paid", "version": 2}

    stale = Batch()
    stale.update("orders", key={"id": 1}, set={"status": "shipped"}, expected_version=1,
                 id="stale")
    with pytest.raises(AtomicBatchError) as caught:
        await client.execute(stale)
    assert caught.value.code == grpc.StatusCode.ABORTED
    assert caught.value.reason == "VERSION_CONFLICT" and caught.value.operation_id == "stale"

    gone = Batch()
    gone.delete("orders", filters={"status": "paid"}, returning=["id"])
    assert (await client.execute(gone))[0].rows_affected == 1
    assert await db.fetchval("SELECT deleted_at IS NOT NULL FROM orders WHERE id = 1")


async def test_validate_only_and_read_only_options_reach_the_server(client, db):
    b = Batch()
    b.insert("customers", {"name": "Dry", "email": "dry@example.com"})
    info = b.call("tx_info")
    result = await client.execute(b, validate_only=True, isolation="serializable")
    assert result.ok and not result.committed
    assert result[info].row["isolation"] == "serializable"
    assert await db.fetchval("SELECT count(*) FROM customers") == 0
    with pytest.raises(AtomicBatchError) as caught:
        await client.execute(b, read_only=True)
    assert caught.value.error_info["sqlstate"] == "25006"


async def test_unreachable_server_is_a_plain_rpc_error():
    port = free_port()
    async with AsyncClient(f"127.0.0.1:{port}", timeout=10) as client:
        with pytest.raises(BatchdRpcError) as caught:
            await client.schema()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert not isinstance(caught.value, AtomicBatchError)


async def test_a_retry_with_the_same_request_id_is_replayed_not_run_again(app, db):
    from batchd.client import AsyncClient, Batch

    b = Batch()
    b.insert("customers", {"name": "Once", "email": "once@x"})
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        first = await client.execute(b, request_id="client-retry-1")
        again = await client.execute(b, request_id="client-retry-1")
    assert (first.replayed, again.replayed) == (False, True)
    assert again.results[0].rows == first.results[0].rows
    assert await db.fetchval("SELECT count(*) FROM customers") == 1


async def test_client_groups_commit_or_roll_back_each_order_whole(client, db):
    b = Batch()
    for i in range(3):
        with b.group(f"order{i}"):
            customer = b.insert("customers", {"name": f"g{i}", "email": f"g{i}@x"})
            # order1 names a customer that does not exist: a foreign-key violation
            b.insert("orders", {"customer_id": 999_999 if i == 1 else customer.ref("id"),
                                "total": "10.00"})
    result = await client.execute(b, mode="independent")
    assert [o.outcome for o in result] == ["SUCCEEDED", "SUCCEEDED", "ROLLED_BACK", "FAILED",
                                          "SUCCEEDED", "SUCCEEDED"]
    assert sorted(r["email"] for r in await db.fetch("SELECT email FROM customers")) == \
        ["g0@x", "g2@x"]
