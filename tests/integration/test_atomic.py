"""ATOMIC batches: one transaction, all or nothing, and a failure nobody can mistake."""

from __future__ import annotations

import asyncpg
import grpc

from tests.support.batches import FAILED, NOT_RUN, ROLLED_BACK, SUCCEEDED, batch, count, fails, rows


def customer(op_id: str, email: str, name: str = "Ada") -> dict:
    return {"id": op_id, "insert": {"table": "customers",
                                    "rows": [{"name": name, "email": email}]}}


async def test_parent_and_children_in_one_batch_with_references(stub, db: asyncpg.Connection):
    response = await stub.BatchExecute(batch([
        customer("c", "ada@example.com"),
        {"id": "order", "insert": {"table": "orders",
                                   "rows": [{"customer_id": {"$ref": "c.id"}, "total": "69.89"}],
                                   "returning": ["id", "customer_id", "version"]}},
        {"id": "items", "insert": {"table": "order_items", "rows": [
            {"order_id": {"$ref": "order.id"}, "product_id": 1, "quantity": 1,
             "unit_price": "49.90"},
            {"order_id": {"$ref": "order.id"}, "product_id": 2, "quantity": 1,
             "unit_price": "19.99"}], "returning": ["order_id", "unit_price"]}},
    ]))
    assert response.committed
    assert [r.outcome for r in response.results] == [SUCCEEDED] * 3
    order = rows(response.results[1])[0]
    assert order["customer_id"] == rows(response.results[0])[0]["id"]
    assert order["version"] == 1
    assert rows(response.results[2]) == [{"order_id": order["id"], "unit_price": "49.90"},
                                         {"order_id": order["id"], "unit_price": "19.99"}]
    stored = await db.fetch("SELECT order_id, unit_price::text FROM order_items ORDER BY id")
    assert [tuple(r) for r in stored] == [(int(order["id"]), "49.90"), (int(order["id"]), "19.99")]


async def test_bulk_update_by_filter_reports_each_row(stub, db):
    await db.execute("INSERT INTO customers (name, email) VALUES ('a', 'a@x'), ('b', 'b@x'), "
                     "('c', 'c@y')")
    response = await stub.BatchExecute(batch([
        {"id": "rename", "update": {"table": "customers",
                                    "filters": [{"column": "email", "op": "OPERATOR_LIKE",
                                                 "value": "%@x"}],
                                    "set": {"name": "renamed"}, "returning": ["id", "name"]}},
    ]))
    assert response.results[0].rows_affected == 2
    assert await db.fetchval("SELECT count(*) FROM customers WHERE name = 'renamed'") == 2


async def test_mixed_create_update_delete_commits_together(stub, db):
    await db.execute("INSERT INTO customers (id, name, email) VALUES (10, 'old', 'old@x'), "
                     "(11, 'gone', 'gone@x')")
    response = await stub.BatchExecute(batch([
        customer("new", "new@x"),
        {"id": "upd", "update": {"table": "customers", "key": {"id": "10"},
                                 "set": {"name": "updated"}}},
        {"id": "del", "delete": {"table": "customers", "key": {"id": 11}}},
    ]))
    assert response.committed
    names = {r["email"]: r["name"] for r in await db.fetch("SELECT email, name FROM customers")}
    assert names == {"new@x": "Ada", "old@x": "updated"}


async def test_atomic_batch_rolls_back_on_unique_violation(stub, db):
    failure = await fails(stub, batch([
        customer("first", "dup@example.com"),
        {"id": "order", "insert": {"table": "orders",
                                   "rows": [{"customer_id": {"$ref": "first.id"}}]}},
        customer("second", "dup@example.com"),
        customer("third", "third@example.com"),
    ]))
    assert failure.code == grpc.StatusCode.ALREADY_EXISTS
    assert 'operation "second"' in failure.message
    assert "rolled back" in failure.message
    assert failure.error_info["sqlstate"] == "23505"
    assert failure.error_info["constraint"] == "customers_email_key"
    assert failure.error_info["table"] == "customers"
    assert failure.error_info["operation_id"] == "second"
    assert failure.outcomes() == {"first": ROLLED_BACK, "order": ROLLED_BACK,
                                  "second": FAILED, "third": NOT_RUN}
    assert not failure.response.committed
    # Rolled-back operations never show ids that no longer exist.
    for result in failure.response.results:
        assert not result.rows and result.rows_affected == 0
    assert await count(db, "customers") == 0
    assert await count(db, "orders") == 0


async def test_failed_operation_status_carries_code_and_details(stub):
    failure = await fails(stub, batch([
        {"id": "bad_fk", "insert": {"table": "orders", "rows": [{"customer_id": "424242"}]}},
    ]))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    failed = failure.response.results[0]
    assert failed.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "orders_customer_id_fkey" in failed.status.message
    assert failure.error_info["sqlstate"] == "23503"


async def test_invalid_operations_are_all_reported_before_anything_runs(stub, db):
    failure = await fails(stub, batch([
        customer("ok", "ok@x"),
        {"id": "bad_type", "insert": {"table": "products",
                                      "rows": [{"sku": "X", "name": "x", "price": True}]}},
        {"id": "bad_col", "get": {"table": "customers", "key": {"id": 1},
                                  "columns": ["nope"]}},
    ]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.outcomes() == {"ok": NOT_RUN, "bad_type": FAILED,
                                  "bad_col": FAILED}
    assert failure.violations == [("operations[1].insert.rows[0].price",
                                   "expected a decimal string or number, got bool "
                                   "(column price, numeric(12,2))")]
    bad_col = failure.response.results[2]
    assert 'no column "nope"' in bad_col.status.message
    assert await count(db, "customers") == 0


async def test_validate_only_reports_results_and_commits_nothing(stub, db):
    response = await stub.BatchExecute(batch([
        customer("c", "dry@example.com"),
        {"id": "o", "insert": {"table": "orders",
                               "rows": [{"customer_id": {"$ref": "c.id"}}]}},
    ], validate_only=True))
    assert not response.committed
    assert [r.outcome for r in response.results] == [SUCCEEDED] * 2
    assert rows(response.results[1])[0]["id"]
    assert await count(db, "customers") == 0
    assert await count(db, "orders") == 0


async def test_validate_only_still_fails_like_the_real_run(stub, db):
    await db.execute("INSERT INTO customers (name, email) VALUES ('x', 'taken@x')")
    failure = await fails(stub, batch([customer("c", "taken@x")], validate_only=True))
    assert failure.code == grpc.StatusCode.ALREADY_EXISTS


async def test_read_only_batch_refuses_writes(stub, db):
    failure = await fails(stub, batch([customer("c", "ro@x")], read_only=True))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.error_info["sqlstate"] == "25006"
    assert await count(db, "customers") == 0


async def test_isolation_level_and_read_only_are_applied(stub):
    response = await stub.BatchExecute(batch([
        {"id": "a", "call": {"handler": "tx_info"}},
        {"id": "b", "call": {"handler": "tx_info"}},
    ], isolation="ISOLATION_LEVEL_SERIALIZABLE", read_only=True))
    a, b = rows(response.results[0])[0], rows(response.results[1])[0]
    assert (a["isolation"], a["read_only"]) == ("serializable", "on")
    assert a["txid"] == b["txid"], "atomic operations share one transaction"
    default = await stub.BatchExecute(batch([{"id": "a", "call": {"handler": "tx_info"}}]))
    assert rows(default.results[0])[0]["isolation"] == "read committed"


async def test_serialization_failure_is_retried_whole(stub, db):
    response = await stub.BatchExecute(batch([
        customer("c", "retry@x"),
        {"id": "conflict", "call": {"handler": "fail_serialization",
                                    "args": {"key": "retry-whole", "times": 2}}},
    ]))
    assert response.committed
    assert response.attempts == 3
    # Only the successful attempt left a row behind.
    assert await count(db, "customers") == 1


async def test_serialization_failure_beyond_retries_is_aborted(stub, db):
    failure = await fails(stub, batch([
        customer("c", "giveup@x"),
        {"id": "conflict", "call": {"handler": "fail_serialization",
                                    "args": {"key": "give-up", "times": 100}}},
    ]))
    assert failure.code == grpc.StatusCode.ABORTED
    assert failure.error_info["sqlstate"] == "40001"
    assert failure.response.attempts == 4  # one try and three retries (the default)
    assert await count(db, "customers") == 0


async def test_custom_handler_runs_inside_the_batch_transaction(stub, db):
    failure = await fails(stub, batch([
        {"id": "take", "call": {"handler": "reserve_stock",
                                "args": {"product_id": 1, "quantity": 5}}},
        {"id": "too_much", "call": {"handler": "reserve_stock",
                                    "args": {"product_id": 2, "quantity": 100000}}},
    ]))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.error_info["reason"] == "OUT_OF_STOCK"
    # The first reservation was rolled back with the batch.
    assert await db.fetchval("SELECT stock FROM products WHERE id = 1") == 100


async def test_custom_handler_results_can_be_referenced(stub, db):
    await db.execute("INSERT INTO customers (id, name, email) VALUES (1, 'a', 'a@x')")
    response = await stub.BatchExecute(batch([
        {"id": "o", "insert": {"table": "orders", "rows": [{"customer_id": 1}]}},
        {"id": "stock", "call": {"handler": "reserve_stock",
                                 "args": {"product_id": 2, "quantity": 3}}},
        {"id": "item", "insert": {"table": "order_items", "rows": [{
            "order_id": {"$ref": "o.id"}, "product_id": {"$ref": "stock.product_id"},
            "quantity": 3, "unit_price": {"$ref": "stock.price"}}],
            "returning": ["unit_price"]}},
    ]))
    assert rows(response.results[1]) == [{"product_id": 2.0, "stock": 247.0, "price": "19.99"}]
    assert rows(response.results[2]) == [{"unit_price": "19.99"}]


async def test_unexpected_handler_exception_is_internal_without_leaking(stub, db):
    failure = await fails(stub, batch([
        customer("c", "internal@x"),
        {"id": "b", "call": {"handler": "boom"}},
    ]))
    assert failure.code == grpc.StatusCode.INTERNAL
    assert "hunter2" not in failure.message and "secret" not in failure.message
    assert "request id" in failure.message
    assert failure.error_info["request_id"]
    assert await count(db, "customers") == 0


async def test_reference_to_a_missing_row_fails_the_referring_operation(stub, db):
    failure = await fails(stub, batch([
        {"id": "none", "query": {"table": "customers",
                                 "filters": [{"column": "email", "op": "OPERATOR_EQ",
                                              "value": "no@x"}]}},
        {"id": "o", "insert": {"table": "orders",
                               "rows": [{"customer_id": {"$ref": "none.id"}}]}},
    ]))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.outcomes() == {"none": ROLLED_BACK, "o": FAILED}
    assert "returned 0 row(s)" in failure.message


async def test_forward_reference_in_atomic_batch_is_invalid(stub):
    failure = await fails(stub, batch([
        {"id": "o", "insert": {"table": "orders", "rows": [{"customer_id": {"$ref": "c.id"}}]}},
        customer("c", "later@x"),
    ]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "comes later" in failure.message
