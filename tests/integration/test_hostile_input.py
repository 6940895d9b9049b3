"""Malformed and hostile requests: a clear INVALID_ARGUMENT naming what was wrong, and
nothing changed."""

from __future__ import annotations

import grpc
import pytest

from batchd.v1 import batch_pb2
from tests.support.batches import batch, count, fails

INJECTIONS = [
    'customers; DROP TABLE customers; --',
    'customers" ; DROP TABLE customers; --',
    '"customers"',
    "public.customers; SELECT 1",
    "hidden.secrets",
    "pg_catalog.pg_authid",
    "information_schema.tables",
    "batchd.anything",
    "CUSTOMERS",
    " customers",
]


@pytest.mark.parametrize("table", INJECTIONS)
async def test_injection_in_table_name_is_an_unknown_table(stub, db, table):
    await db.execute("INSERT INTO customers (id, name, email) VALUES (1, 'a', 'a@x')")
    failure = await fails(stub, batch([{"id": "x", "query": {"table": table}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.violations[0][0] == "operations[0].query.table"
    assert "unknown or not exposed table" in failure.violations[0][1]
    assert await count(db, "customers") == 1
    assert await db.fetchval("SELECT count(*) FROM hidden.secrets") == 1


@pytest.mark.parametrize("column", [
    'name"; DROP TABLE customers; --', "name = name; --", "*", "name, email", "NAME",
])
async def test_injection_in_column_names_is_an_unknown_column(stub, db, column):
    await db.execute("INSERT INTO customers (id, name, email) VALUES (1, 'a', 'a@x')")
    for op in (
        {"insert": {"table": "customers", "rows": [{column: "x", "email": "e@x"}]}},
        {"query": {"table": "customers", "filters": [{"column": column, "op": "OPERATOR_EQ",
                                                      "value": "a"}]}},
        {"query": {"table": "customers", "order_by": [{"column": column}]}},
        {"update": {"table": "customers", "key": {"id": 1}, "set": {column: "x"}}},
        {"get": {"table": "customers", "key": {"id": 1}, "columns": [column]}},
    ):
        if column == "*" and "get" in op:
            continue  # ["*"] is the documented "all columns"
        failure = await fails(stub, batch([{"id": "x", **op}]))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, op
        assert "column" in failure.message
    assert await count(db, "customers") == 1


async def test_a_table_with_an_odd_name_is_quoted_from_the_catalog(stub, db):
    response = await stub.BatchExecute(batch([
        {"id": "w", "insert": {"table": 'Odd "Name"', "rows": [{"id": 1, "select": "x'y"}],
                               "returning": ["select"]}},
    ]))
    assert response.results[0].rows[0]["select"] == "x'y"
    assert await db.fetchval('SELECT "select" FROM "Odd ""Name"""') == "x'y"


async def test_values_are_bound_parameters_never_sql(stub, db):
    evil = "'); DROP TABLE customers; --"
    await stub.BatchExecute(batch([
        {"id": "w", "insert": {"table": "customers", "rows": [{"name": evil, "email": evil}]}},
    ]))
    assert await db.fetchval("SELECT name FROM customers") == evil


@pytest.mark.parametrize(("name", "reason"), [
    ("c" * 64, "63-byte"),
    ("é" * 32, "63-byte"),  # 64 bytes in UTF-8
    ("customers\x00", "NUL"),
    ("", "must not be empty"),
])
async def test_names_postgres_would_truncate_or_refuse_are_rejected(stub, db, name, reason):
    # A 70-character name whose first 63 characters are an existing table would, if passed to
    # PostgreSQL, be silently truncated onto that table.
    for op in ({"query": {"table": name}},
               {"query": {"table": "customers", "filters": [{"column": name, "op": "OPERATOR_EQ",
                                                             "value": 1}]}}):
        failure = await fails(stub, batch([{"id": "x", **op}]))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
        assert reason in failure.message


async def test_long_name_with_an_existing_prefix_does_not_reach_the_table(stub, db):
    await db.execute("INSERT INTO customers (id, name, email) VALUES (1, 'a', 'a@x')")
    failure = await fails(stub, batch([{"id": "x", "delete": {
        "table": "customers" + "x" * 61, "key": {"id": 1}}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert await count(db, "customers") == 1


@pytest.mark.parametrize("op_id", ["", "has space", "a.b", "x" * 65, "naïve", "semi;colon"])
async def test_malformed_operation_ids_are_rejected(stub, op_id):
    failure = await fails(stub, batch([{"id": op_id, "call": {"handler": "echo"}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.violations[0][0] == "operations[0].id"


async def test_duplicate_operation_ids_are_rejected(stub):
    failure = await fails(stub, batch([{"id": "a", "call": {"handler": "echo"}},
                                       {"id": "a", "call": {"handler": "echo"}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not unique" in failure.message


async def test_operation_without_a_kind_is_rejected(stub):
    failure = await fails(stub, batch([{"id": "a"}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "must be set" in failure.message


async def test_more_operations_than_allowed_is_rejected_before_anything_runs(stub, db, app):
    limit = app.settings.max_operations
    failure = await fails(stub, batch([
        {"id": f"op{i}", "insert": {"table": "customers",
                                    "rows": [{"name": "n", "email": f"{i}@x"}]}}
        for i in range(limit + 1)]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.violations[0][0] == "operations"
    assert f"exceed the limit of {limit}" in failure.message
    assert await count(db, "customers") == 0


async def test_empty_batch_is_rejected(stub):
    failure = await fails(stub, batch_pb2.BatchExecuteRequest())
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_oversized_message_is_refused_by_grpc(stub, app, db):
    big = "x" * (app.settings.max_message_bytes + 1024)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchExecute(batch([{"id": "a", "insert": {
            "table": "customers", "rows": [{"name": big, "email": "big@x"}]}}]))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await count(db, "customers") == 0


async def test_unknown_enum_values_are_rejected(stub):
    request = batch([{"id": "a", "call": {"handler": "echo"}}])
    request.mode = 99
    failure = await fails(stub, request)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.violations[0][0] == "mode"


async def test_a_misspelt_table_or_column_is_named_with_a_suggestion(stub):
    failure = await fails(stub, batch([{"id": "c", "insert": {
        "table": "customer", "rows": [{"name": "n", "email": "e@x"}]}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert 'unknown or not exposed table "customer"; did you mean "customers"?' in \
        failure.message
    failure = await fails(stub, batch([{"id": "c", "insert": {
        "table": "customers", "rows": [{"name": "n", "emial": "e@x"}]}}]))
    assert 'has no column "emial"; did you mean "email"?' in failure.message


@pytest.mark.parametrize("column", ["docb", "tags"])
async def test_json_text_nested_past_any_limit_rejects_its_row_not_internal(stub, db, column):
    """A COLUMNAR json or array value nested 100,000 deep: that row is rejected, naming the
    column, the others written (Python's JSON reader recursed past its limit: INTERNAL)."""
    from tests.support.streams import Req, header, open_stream, send

    deep = "[" * 100_000 + "]" * 100_000
    call, _ = await open_stream(stub, header(table="all_types", columns=["id", column],
                                             encoding="ENCODING_COLUMNAR",
                                             mode="MODE_INDEPENDENT"))
    chunk = batch_pb2.StreamChunk(sequence=1, columnar=batch_pb2.ColumnarRows(columns=[
        batch_pb2.ColumnValues(int64s=batch_pb2.Int64Array(values=[901, 902])),
        batch_pb2.ColumnValues(strings=batch_pb2.StringArray(values=[deep, "[]"]))]))
    ack = (await send(call, Req(chunk=chunk))).ack
    await call.done_writing()
    assert ack.rows_written == 1
    [rejected] = ack.rejected
    assert rejected.chunk_index == 0
    assert rejected.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert column in rejected.status.message and "deep" in rejected.status.message
    assert await count(db, "all_types") == 1
