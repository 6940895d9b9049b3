"""Values round-trip exactly: client -> batchd -> PostgreSQL -> batchd -> client.

Each case writes one column through an insert, checks what PostgreSQL stored (through a
separate connection, as text), and reads it back through a get.
"""

from __future__ import annotations

import base64
from typing import Any

import grpc
import pytest

from tests.support.batches import batch, fails, rows

CASES: list[tuple[str, str, Any, str | None, Any]] = [
    # (test id, column, value sent, PostgreSQL's text of it, value returned)
    ("int64_beyond_2_53", "i8", "9007199254740993", "9007199254740993", "9007199254740993"),
    ("int64_max", "i8", "9223372036854775807", "9223372036854775807", "9223372036854775807"),
    ("int64_min", "i8", "-9223372036854775808", "-9223372036854775808",
     "-9223372036854775808"),
    ("integer_from_number", "i4", 2147483647, "2147483647", 2147483647.0),
    ("smallint", "i2", -32768, "-32768", -32768.0),
    ("numeric_exact", "num", "12345678901234567890.123456789012345678",
     "12345678901234567890.123456789012345678", "12345678901234567890.123456789012345678"),
    ("numeric_keeps_scale", "money", "10.50", "10.50", "10.50"),
    ("numeric_from_double", "num", 0.1, "0.1", "0.1"),
    ("double", "f8", 1.0000000000000002, "1.0000000000000002", 1.0000000000000002),
    ("double_nan", "f8", "NaN", "NaN", "NaN"),
    ("double_infinity", "f8", "-Infinity", "-Infinity", "-Infinity"),
    ("timestamptz_with_offset", "at", "2024-02-29T23:59:59.123456+05:30",
     "2024-02-29 18:29:59.123456+00", "2024-02-29T18:29:59.123456+00:00"),
    ("timestamptz_zulu", "at", "1999-12-31T23:59:59Z", "1999-12-31 23:59:59+00",
     "1999-12-31T23:59:59+00:00"),
    ("timestamp_without_zone", "local_at", "2024-01-02T03:04:05.000006",
     "2024-01-02 03:04:05.000006", "2024-01-02T03:04:05.000006"),
    ("date", "day", "2024-02-29", "2024-02-29", "2024-02-29"),
    ("uuid", "uid", "6f1e4b1c-9a3b-4c8e-8f2e-0d9b1a7c5e33",
     "6f1e4b1c-9a3b-4c8e-8f2e-0d9b1a7c5e33", "6f1e4b1c-9a3b-4c8e-8f2e-0d9b1a7c5e33"),
    ("json_object", "doc", {"a": [1, 2.5, None, True, {"c": "ü"}]},
     '{"a":[1,2.5,null,true,{"c":"ü"}]}', {"a": [1, 2.5, None, True, {"c": "ü"}]}),
    ("jsonb_scalar_string", "docb", "just a string", '"just a string"', "just a string"),
    ("jsonb_nested", "docb", {"k": {"deep": [{"x": 1}]}}, '{"k": {"deep": [{"x": 1}]}}',
     {"k": {"deep": [{"x": 1}]}}),
    ("bytea", "blob", base64.b64encode(bytes(range(256))).decode(),
     "\\x" + bytes(range(256)).hex(), base64.b64encode(bytes(range(256))).decode()),
    ("bigint_array", "ids", ["9007199254740993", 1, None], "{9007199254740993,1,NULL}",
     ["9007199254740993", "1", None]),
    ("text_array_with_quotes", "tags", ['a,b', 'say "hi"', ""], '{"a,b","say \\"hi\\"",""}',
     ['a,b', 'say "hi"', ""]),
    ("two_dimensional_array", "grid", [[1, 2], [3, 4]], "{{1,2},{3,4}}",
     [[1.0, 2.0], [3.0, 4.0]]),
    ("boolean_true", "flag", True, "true", True),
    ("boolean_false", "flag", False, "false", False),
    ("text_unicode_and_nul_free", "label", "Ünïcødé ✓ 'quoted' \"double\"",
     "Ünïcødé ✓ 'quoted' \"double\"", "Ünïcødé ✓ 'quoted' \"double\""),
    ("interval", "span", "P1DT2H3M4.5S", "1 day 02:03:04.5", "P1DT2H3M4.5S"),
    ("interval_with_months", "span", "P1Y2M3W", "1 year 2 mons 21 days", "P1Y2M21D"),
    ("interval_negative_seconds", "span", -90.5, "-00:01:30.5", "PT-1M-30.5S"),
    ("date_first_day", "day", "0001-01-01", "0001-01-01", "0001-01-01"),
    ("date_last_day", "day", "9999-12-31", "9999-12-31", "9999-12-31"),
    ("date_infinity", "day", "infinity", "infinity", "infinity"),
    ("timestamptz_minus_infinity", "at", "-infinity", "-infinity", "-infinity"),
    ("timestamptz_last_microsecond", "at", "9999-12-31T23:59:59.999999Z",
     "9999-12-31 23:59:59.999999+00", "9999-12-31T23:59:59.999999+00:00"),
    ("numeric_small_without_exponent", "num", "0.00000010", "0.00000010", "0.00000010"),
    ("null", "label", None, None, None),
]


@pytest.mark.parametrize(("column", "sent", "stored", "returned"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_value_round_trips_exactly(stub, db, column, sent, stored, returned):
    response = await stub.BatchExecute(batch([
        {"id": "w", "insert": {"table": "all_types", "rows": [{"id": 1, column: sent}]}},
        {"id": "r", "get": {"table": "all_types", "key": {"id": {"$ref": "w.id"}},
                            "columns": [column]}},
    ]))
    assert await db.fetchval(f"SELECT {column}::text FROM all_types WHERE id = 1") == stored
    assert rows(response.results[1]) == [{column: returned}]


async def test_exact_values_work_as_keys_filters_and_references(stub, db):
    big = "9223372036854775000"
    response = await stub.BatchExecute(batch([
        {"id": "w", "insert": {"table": "all_types", "rows": [{"id": big, "num": "0.3"}],
                               "returning": ["id", "num"]}},
        {"id": "q", "query": {"table": "all_types", "filters": [
            {"column": "id", "op": "OPERATOR_EQ", "value": {"$ref": "w.id"}},
            {"column": "num", "op": "OPERATOR_EQ", "value": "0.3"}], "columns": ["id"]}},
    ]))
    assert rows(response.results[1]) == [{"id": big}]


@pytest.mark.parametrize(("column", "value", "needle"), [
    ("i8", 9007199254740993, "send it as a string"),
    ("i4", 1.5, "expected an integer"),
    ("i2", 40000, "out of range for int2"),
    ("num", "twelve", "not a decimal number"),
    ("at", "2024-01-01T00:00:00", "needs an offset"),
    ("uid", "not-a-uuid", "not a UUID"),
    ("blob", "***", "base64"),
    ("flag", "yes", "expected a boolean"),
    ("label", 5, "expected a string"),
    ("ids", 5, "expected a list"),
    ("day", "31/12/2024", "not a date"),
])
async def test_wrong_value_type_names_the_field_and_changes_nothing(stub, db, column, value,
                                                                    needle):
    failure = await fails(stub, batch([
        {"id": "w", "insert": {"table": "all_types", "rows": [{"id": 1, column: value}]}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    field, description = failure.violations[0]
    assert field == f"operations[0].insert.rows[0].{column}"
    assert needle in description
    assert 'operation "w"' in failure.message
    assert await db.fetchval("SELECT count(*) FROM all_types") == 0


async def test_database_side_value_errors_are_invalid_argument(stub, db):
    failure = await fails(stub, batch([
        {"id": "w", "insert": {"table": "all_types", "rows": [{"id": 1, "code": "x" * 11}]}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.error_info["sqlstate"] == "22001"  # string_data_right_truncation


async def test_jsonb_array_elements_are_documents_of_any_shape(stub, db):
    """A jsonb[] element that is itself a JSON array is one document, not another dimension
    (it was refused as a non-homogeneous array)."""
    docs = [[1, 2], {"a": [3, {"b": None}]}, "s", None, [], 4.5]
    try:
        response = await stub.BatchExecute(batch([{"id": "i", "insert": {
            "table": "arrow_extra", "rows": [{"id": 77, "docs": docs}], "returning": ["docs"]}}]))
        assert rows(response.results[0]) == [{"docs": docs}]
        stored = await db.fetchval("SELECT docs::text FROM arrow_extra WHERE id = 77")
        assert stored == '{"[1, 2]","{\\"a\\": [3, {\\"b\\": null}]}","\\"s\\"",NULL,[],4.5}'
    finally:
        await db.execute("DELETE FROM arrow_extra WHERE id = 77")
