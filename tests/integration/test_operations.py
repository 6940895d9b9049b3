"""Each operation kind: insert, get, query, update, delete, call."""

from __future__ import annotations

import grpc
import pytest

from batchd.v1 import batch_pb2
from tests.support.batches import FAILED, SUCCEEDED, batch, count, fails, rows


async def one(stub, op: dict, **fields) -> batch_pb2.OperationResult:
    response = await stub.BatchExecute(batch([{"id": "op", **op}], **fields))
    return response.results[0]


async def seed_customers(db, n: int = 3) -> None:
    await db.execute("INSERT INTO customers (id, name, email) "
                     "SELECT g, 'name' || g, 'c' || g || '@x' FROM generate_series(1, $1) g", n)


# --- insert ----------------------------------------------------------------------------------

async def test_insert_many_rows_returns_each_in_order(stub, db):
    result = await one(stub, {"insert": {"table": "customers", "rows": [
        {"name": f"n{i}", "email": f"e{i}@x"} for i in range(50)], "returning": ["email"]}})
    assert result.rows_affected == 50
    assert [r["email"] for r in rows(result)] == [f"e{i}@x" for i in range(50)]
    assert await count(db, "customers") == 50


async def test_insert_returns_primary_key_by_default(stub, db):
    result = await one(stub, {"insert": {"table": "customers",
                                         "rows": [{"name": "a", "email": "a@x"}]}})
    assert rows(result) == [{"id": "1"}]


async def test_insert_rows_must_name_the_same_columns(stub):
    failure = await fails(stub, batch([{"id": "op", "insert": {"table": "customers", "rows": [
        {"name": "a", "email": "a@x"}, {"name": "b"}]}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.violations[0][0] == "operations[0].insert.rows[1]"


async def test_insert_on_conflict_do_nothing_skips_existing_rows(stub, db):
    await seed_customers(db, 1)
    result = await one(stub, {"insert": {
        "table": "customers", "rows": [{"name": "dup", "email": "c1@x"},
                                       {"name": "new", "email": "new@x"}],
        "on_conflict": {"action": "ACTION_DO_NOTHING", "conflict_columns": ["email"]},
        "returning": ["email"]}})
    assert rows(result) == [{"email": "new@x"}]
    assert result.rows_affected == 1
    assert await db.fetchval("SELECT name FROM customers WHERE email = 'c1@x'") == "name1"


async def test_insert_on_conflict_update_upserts_listed_columns(stub, db):
    await seed_customers(db, 1)
    result = await one(stub, {"insert": {
        "table": "customers", "rows": [{"id": 1, "name": "upserted", "email": "c1@x"}],
        "on_conflict": {"action": "ACTION_UPDATE", "update_columns": ["name"]},
        "returning": ["id", "name"]}})
    assert rows(result) == [{"id": "1", "name": "upserted"}]
    assert await count(db, "customers") == 1


async def test_upsert_increments_the_version_column(stub, db):
    await seed_customers(db, 1)
    await db.execute("INSERT INTO orders (id, customer_id) VALUES (1, 1)")
    result = await one(stub, {"insert": {
        "table": "orders", "rows": [{"id": 1, "customer_id": 1, "status": "paid"}],
        "on_conflict": {"action": "ACTION_UPDATE", "update_columns": ["status"]},
        "returning": ["status", "version"]}})
    assert rows(result) == [{"status": "paid", "version": 2.0}]


async def test_insert_conflict_without_handling_is_already_exists(stub, db):
    await seed_customers(db, 1)
    failure = await fails(stub, batch([{"id": "op", "insert": {
        "table": "customers", "rows": [{"name": "x", "email": "c1@x"}]}}]))
    assert failure.code == grpc.StatusCode.ALREADY_EXISTS


async def test_table_without_primary_key_takes_inserts_only(stub, db):
    result = await one(stub, {"insert": {"table": "no_key", "rows": [{"x": 1}, {"x": 2}]}})
    assert result.rows_affected == 2 and not result.rows
    assert await db.fetchval("SELECT count(*) FROM no_key") == 2
    failure = await fails(stub, batch([{"id": "q", "query": {"table": "no_key"}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert 'operation "query" is not allowed' in failure.message


async def test_insert_into_generated_identity_by_default_accepts_explicit_ids(stub, db):
    result = await one(stub, {"insert": {"table": "customers", "rows": [
        {"id": "9007199254740993", "name": "big", "email": "big@x"}]}})
    assert rows(result) == [{"id": "9007199254740993"}]


# --- get -------------------------------------------------------------------------------------

async def test_get_by_primary_key(stub, db):
    await seed_customers(db, 2)
    result = await one(stub, {"get": {"table": "customers", "key": {"id": "2"},
                                      "columns": ["name", "email"]}})
    assert rows(result) == [{"name": "name2", "email": "c2@x"}]


async def test_get_missing_row_is_not_found(stub):
    failure = await fails(stub, batch([{"id": "g", "get": {"table": "customers",
                                                            "key": {"id": 404}}}]))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.response.results[0].outcome == FAILED


async def test_get_needs_the_whole_key_and_nothing_else(stub):
    failure = await fails(stub, batch([{"id": "g", "get": {"table": "customers",
                                                            "key": {"id": 1, "name": "x"}}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.violations[0][0] == "operations[0].get.key"


# --- query -----------------------------------------------------------------------------------

async def seed_events(db) -> None:
    await db.executemany("INSERT INTO events (id, kind, score) VALUES ($1, $2, $3)", [
        (1, "click", 5), (2, "view", None), (3, "click", 1), (4, "buy", 9), (5, "view", 5),
        (6, "click", None), (7, "buy", 2)])


@pytest.mark.parametrize(("op", "value", "expected"), [
    ("EQ", "click", [1, 3, 6]),
    ("NE", "click", [2, 4, 5, 7]),
    ("IN", ["buy", "view"], [2, 4, 5, 7]),
    ("LIKE", "%i%", [1, 2, 3, 5, 6]),
])
async def test_query_text_filters(stub, db, op, value, expected):
    await seed_events(db)
    result = await one(stub, {"query": {"table": "events", "filters": [
        {"column": "kind", "op": f"OPERATOR_{op}", "value": value}], "columns": ["id"]}})
    assert [int(r["id"]) for r in rows(result)] == expected


@pytest.mark.parametrize(("op", "value", "expected"), [
    ("LT", 5, [3, 7]), ("LE", 5, [1, 3, 5, 7]), ("GT", 5, [4]), ("GE", 5, [1, 4, 5]),
    ("IS_NULL", True, [2, 6]), ("IS_NULL", False, [1, 3, 4, 5, 7]), ("EQ", None, [2, 6]),
])
async def test_query_comparison_and_null_filters(stub, db, op, value, expected):
    await seed_events(db)
    result = await one(stub, {"query": {"table": "events", "filters": [
        {"column": "score", "op": f"OPERATOR_{op}", "value": value}], "columns": ["id"]}})
    assert [int(r["id"]) for r in rows(result)] == expected


async def test_query_filters_are_and_combined(stub, db):
    await seed_events(db)
    result = await one(stub, {"query": {"table": "events", "filters": [
        {"column": "kind", "op": "OPERATOR_EQ", "value": "click"},
        {"column": "score", "op": "OPERATOR_GE", "value": 2}], "columns": ["id"]}})
    assert [r["id"] for r in rows(result)] == ["1"]


async def test_query_keyset_pages_walk_every_row_once_with_nulls_and_mixed_order(stub, db):
    await seed_events(db)
    for order in ([{"column": "score", "descending": True}],
                  [{"column": "score"}], [{"column": "kind"}, {"column": "score",
                                                                "descending": True}]):
        seen, token, pages = [], "", 0
        while True:
            result = await one(stub, {"query": {"table": "events", "order_by": order,
                                                "limit": 2, "page_token": token}})
            seen += [int(r["id"]) for r in rows(result)]
            pages += 1
            token = result.next_page_token
            if not token:
                break
        full = await one(stub, {"query": {"table": "events", "order_by": order}})
        assert seen == [int(r["id"]) for r in rows(full)]
        assert sorted(seen) == [1, 2, 3, 4, 5, 6, 7]
        assert pages == 4


async def test_page_token_of_another_query_is_rejected(stub, db):
    await seed_events(db)
    first = await one(stub, {"query": {"table": "events", "limit": 2}})
    failure = await fails(stub, batch([{"id": "q", "query": {
        "table": "events", "limit": 2, "page_token": first.next_page_token,
        "filters": [{"column": "kind", "op": "OPERATOR_EQ", "value": "buy"}]}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "different query" in failure.message
    garbage = await fails(stub, batch([{"id": "q", "query": {"table": "events",
                                                             "page_token": "not-a-token"}}]))
    assert garbage.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_query_limit_above_maximum_is_invalid(stub):
    failure = await fails(stub, batch([{"id": "q", "query": {"table": "events",
                                                             "limit": 1_000_000}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.violations[0][0] == "operations[0].query.limit"


# --- update ----------------------------------------------------------------------------------

async def order_with_version(db, version: int = 1) -> None:
    await seed_customers(db, 1)
    await db.execute("INSERT INTO orders (id, customer_id, version) VALUES (1, 1, $1)", version)


async def test_update_by_key_with_expected_version_increments_it(stub, db):
    await order_with_version(db, 3)
    result = await one(stub, {"update": {"table": "orders", "key": {"id": 1},
                                         "set": {"status": "paid"}, "expected_version": 3,
                                         "returning": ["status", "version"]}})
    assert rows(result) == [{"status": "paid", "version": 4.0}]


async def test_update_with_stale_version_is_aborted_and_changes_nothing(stub, db):
    await order_with_version(db, 3)
    failure = await fails(stub, batch([{"id": "u", "update": {
        "table": "orders", "key": {"id": 1}, "set": {"status": "paid"},
        "expected_version": 2}}]))
    assert failure.code == grpc.StatusCode.ABORTED
    assert failure.error_info["reason"] == "VERSION_CONFLICT"
    assert failure.error_info["actual_version"] == "3"
    assert await db.fetchval("SELECT status FROM orders WHERE id = 1") == "new"


async def test_update_missing_row_by_key_is_not_found(stub):
    failure = await fails(stub, batch([{"id": "u", "update": {
        "table": "customers", "key": {"id": 5}, "set": {"name": "x"}}}]))
    assert failure.code == grpc.StatusCode.NOT_FOUND


async def test_update_by_filter_matching_nothing_succeeds_with_zero_rows(stub):
    result = await one(stub, {"update": {"table": "customers", "filters": [
        {"column": "name", "op": "OPERATOR_EQ", "value": "nobody"}], "set": {"name": "x"}}})
    assert result.outcome == SUCCEEDED and result.rows_affected == 0


async def test_update_needs_key_or_filters_and_may_not_set_the_version(stub):
    no_selection = await fails(stub, batch([{"id": "u", "update": {
        "table": "customers", "set": {"name": "everyone"}}}]))
    assert no_selection.code == grpc.StatusCode.INVALID_ARGUMENT
    version = await fails(stub, batch([{"id": "u", "update": {
        "table": "orders", "key": {"id": 1}, "set": {"version": 7}}}]))
    assert version.violations[0][0] == "operations[0].update.set.version"


# --- delete ----------------------------------------------------------------------------------

async def test_delete_by_key_removes_the_row(stub, db):
    await seed_customers(db, 2)
    result = await one(stub, {"delete": {"table": "customers", "key": {"id": 1}}})
    assert rows(result) == [{"id": "1"}]
    assert await count(db, "customers") == 1


async def test_delete_on_soft_delete_table_marks_the_row_and_hides_it(stub, db):
    await order_with_version(db)
    result = await one(stub, {"delete": {"table": "orders", "key": {"id": 1},
                                         "returning": ["version"]}})
    assert rows(result) == [{"version": 2.0}]
    assert await db.fetchval("SELECT deleted_at IS NOT NULL FROM orders WHERE id = 1")
    hidden = await fails(stub, batch([{"id": "g", "get": {"table": "orders",
                                                           "key": {"id": 1}}}]))
    assert hidden.code == grpc.StatusCode.NOT_FOUND
    listed = await one(stub, {"query": {"table": "orders"}})
    assert listed.rows_affected == 0
    shown = await one(stub, {"get": {"table": "orders", "key": {"id": 1},
                                     "include_deleted": True}})
    assert shown.rows_affected == 1
    again = await fails(stub, batch([{"id": "d", "delete": {"table": "orders",
                                                             "key": {"id": 1}}}]))
    assert again.code == grpc.StatusCode.NOT_FOUND


async def test_delete_by_filter(stub, db):
    await seed_customers(db, 5)
    result = await one(stub, {"delete": {"table": "customers", "filters": [
        {"column": "id", "op": "OPERATOR_IN", "value": [1, "2", 3]}]}})
    assert result.rows_affected == 3
    assert await count(db, "customers") == 2


async def test_delete_with_stale_version_is_aborted(stub, db):
    await order_with_version(db, 2)
    failure = await fails(stub, batch([{"id": "d", "delete": {
        "table": "orders", "key": {"id": 1}, "expected_version": 1}}]))
    assert failure.code == grpc.StatusCode.ABORTED
    assert await db.fetchval("SELECT deleted_at FROM orders WHERE id = 1") is None


# --- call and schema -------------------------------------------------------------------------

async def test_call_unknown_handler_is_invalid(stub):
    failure = await fails(stub, batch([{"id": "c", "call": {"handler": "nope"}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.violations[0][0] == "operations[0].call.handler"


async def test_call_passes_integral_numbers_as_ints(stub):
    result = await one(stub, {"call": {"handler": "echo", "args": {"n": 3, "f": 1.5,
                                                                    "nested": {"m": [1, 2]}}}})
    assert rows(result) == [{"n": 3.0, "f": 1.5, "nested": {"m": [1.0, 2.0]}}]


async def test_table_operation_allow_list_is_enforced(stub):
    failure = await fails(stub, batch([{"id": "w", "insert": {
        "table": "readonly_things", "rows": [{"id": 1, "name": "x"}]}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert 'operation "insert" is not allowed' in failure.message


async def test_schema_lists_exposed_tables_and_handlers(stub):
    schema = await stub.GetSchema(batch_pb2.GetSchemaRequest())
    tables = {t.name: t for t in schema.tables}
    assert "public.orders" in tables and "hidden.secrets" not in tables
    assert list(tables["public.no_key"].operations) == ["insert"]  # no primary key
    orders = tables["public.orders"]
    assert (orders.version_column, orders.soft_delete_column) == ("version", "deleted_at")
    assert list(orders.primary_key) == ["id"]
    assert {c.name: c.type for c in orders.columns}["total"] == "numeric(12,2)"
    assert list(tables["public.readonly_things"].operations) == ["get", "query"]
    assert {"echo", "reserve_stock"} <= set(schema.handlers)
