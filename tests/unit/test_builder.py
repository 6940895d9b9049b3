"""batchd.client.builder: Python values as protobuf values, and the ``Batch`` builder's
requests and refusals (no server: what it builds is checked as a message)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from google.protobuf import json_format

from batchd.batch.plan import plan_batch
from batchd.client import Batch, all_of, any_of, not_
from batchd.client.builder import to_value
from batchd.v1 import batch_pb2
from batchd.values import coerce, from_proto
from tests.unit.shop import CTX, col


def value_json(value):
    return json_format.MessageToDict(to_value(value))


def test_values_map_to_protobuf_exactly():
    assert value_json(None) is None
    assert value_json(True) is True
    assert value_json(2**53 - 1) == 2**53 - 1 and value_json(-(2**53 - 1)) == -(2**53 - 1)
    assert value_json(2**53) == "9007199254740992"
    assert value_json(-(2**63)) == "-9223372036854775808"
    assert value_json(1.5) == 1.5
    assert [value_json(float(x)) for x in ("nan", "inf", "-inf")] == \
        ["NaN", "Infinity", "-Infinity"]
    assert value_json(Decimal("1E+3")) == "1000" and value_json(Decimal("0.10")) == "0.10"
    assert value_json(dt.date(2024, 2, 29)) == "2024-02-29"
    assert value_json(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)) == "2024-01-01T00:00:00+00:00"
    assert value_json(dt.timedelta(days=-1, seconds=5)) == "-P0DT86395S"
    assert value_json(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert value_json(b"\x00\xff") == "AP8="
    assert value_json({"a": [1, (2, "x"), {"b": None}]}) == {"a": [1, [2, "x"], {"b": None}]}
    with pytest.raises(TypeError):
        to_value(object())


def test_references_name_the_operation_column_and_row():
    b = Batch()
    first = b.insert("customers", {"name": "a", "email": "a@x"})
    assert first.ref("id") == {"$ref": "op1.id"}
    assert first.ref("id", row=3) == {"$ref": "op1.3.id"}
    request = b.to_request()
    assert request.mode == batch_pb2.MODE_ATOMIC


def test_generated_ids_skip_ids_already_given_and_duplicates_are_refused():
    b = Batch()
    assert b.call("echo", id="op2").id == "op2"
    assert [b.call("echo").id, b.call("echo").id] == ["op3", "op4"]
    with pytest.raises(ValueError, match="already used"):
        b.call("echo", id="op3")


def test_builder_refuses_ambiguous_operations():
    b = Batch()
    with pytest.raises(ValueError, match="exactly one of key= and filters="):
        b.update("orders", key={"id": 1}, filters=[("id", "eq", 1)], set={"status": "x"})
    with pytest.raises(ValueError, match="exactly one"):
        b.delete("orders")
    with pytest.raises(ValueError, match="unknown filter operator"):
        b.query("orders", [("id", "between", 1)])
    with pytest.raises(ValueError, match="on_conflict"):
        b.insert("orders", {"id": 1}, on_conflict="ignore")
    with pytest.raises(ValueError, match="atomic, independent"):
        b.to_request(mode="sometimes")
    assert len(b) == 0


def test_builder_request_matches_the_grpcurl_json():
    b = Batch()
    c = b.insert("customers", {"name": "a", "email": "a@x"}, on_conflict="do_nothing",
                 conflict_columns=["email"])
    b.query("orders", {"customer_id": c.ref("id")}, order_by=["-total", "id"], limit=5,
            depends_on=[c], id="q")
    request = json_format.MessageToDict(b.to_request(mode="independent", isolation="serializable",
                                                     read_only=True))
    assert request == {
        "operations": [
            {"id": "op1", "insert": {"table": "customers", "rows": [{"name": "a", "email": "a@x"}],
                                     "onConflict": {"action": "ACTION_DO_NOTHING",
                                                    "conflictColumns": ["email"]}}},
            {"id": "q", "dependsOn": ["op1"], "query": {
                "table": "orders",
                "filters": [{"column": "customer_id", "op": "OPERATOR_EQ",
                             "value": {"$ref": "op1.id"}}],
                "orderBy": [{"column": "total", "descending": True}, {"column": "id"}],
                "limit": 5}},
        ],
        "mode": "MODE_INDEPENDENT", "isolation": "ISOLATION_LEVEL_SERIALIZABLE", "readOnly": True,
    }


# --- to_value, one rule at a time ------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (2**53 - 1, 9007199254740991), (-(2**53 - 1), -9007199254740991),
    (2**53, "9007199254740992"), (-(2**53), "-9007199254740992"),
    (2**64, "18446744073709551616"), (0, 0),
])
def test_integers_beyond_2_53_travel_as_decimal_strings(value: int, expected: object) -> None:
    assert value_json(value) == expected


def test_a_bool_stays_a_bool_not_a_number() -> None:
    assert value_json(False) is False


@pytest.mark.parametrize(("value", "expected"), [
    (Decimal("NaN"), "NaN"), (Decimal("Infinity"), "Infinity"),
    (Decimal("-Infinity"), "-Infinity"), (Decimal("-0.00"), "-0.00"),
    (Decimal("1.5E-7"), "0.00000015"), (Decimal("12345678901234567890.123456789"),
                                        "12345678901234567890.123456789"),
])
def test_decimals_travel_as_plain_decimal_strings(value: Decimal, expected: str) -> None:
    assert value_json(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (dt.timedelta(0), "P0DT0S"),
    (dt.timedelta(days=1, seconds=3661, microseconds=500000), "P1DT3661.5S"),
    (dt.timedelta(microseconds=1), "P0DT0.000001S"),
    (dt.timedelta(microseconds=-1), "-P0DT0.000001S"),
    (dt.timedelta(days=-2), "-P2DT0S"),
])
def test_timedeltas_travel_as_iso_8601_durations(value: dt.timedelta, expected: str) -> None:
    assert value_json(value) == expected


def test_times_and_naive_datetimes_travel_as_isoformat() -> None:
    assert value_json(dt.time(23, 59, 59, 5)) == "23:59:59.000005"
    assert value_json(dt.datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05"


def test_all_byte_buffers_travel_as_base64() -> None:
    assert value_json(bytearray(b"\x01\x02")) == value_json(memoryview(b"\x01\x02")) == "AQI="


def test_sets_and_tuples_travel_as_lists() -> None:
    assert value_json((1, "a")) == [1, "a"]
    assert sorted(value_json({3, 1, 2})) == [1, 2, 3]
    assert value_json(frozenset()) == []


def test_a_protobuf_value_is_copied_as_it_is() -> None:
    given = to_value({"$literal": {"$ref": "x.y"}})
    assert to_value(given) == given and to_value(given) is not given


def test_mapping_keys_must_be_column_names() -> None:
    with pytest.raises(TypeError, match="keys must be column names"):
        to_value({1: "one"})


# --- references and operations ---------------------------------------------------------------

def test_a_reference_row_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="row must be >= 0"):
        Batch().call("echo").ref("x", row=-1)


def test_handles_are_equal_by_operation_id() -> None:
    b = Batch()
    handle = b.call("echo", id="e")
    assert handle == handle.__class__("e", "get") and hash(handle) == hash("e")
    assert handle != "e" and repr(handle) == "OpRef('e', 'call')"


def test_depends_on_takes_handles_and_ids() -> None:
    b = Batch()
    first, second = b.call("echo"), b.call("echo", id="two")
    third = b.call("echo", depends_on=[first, "two"])
    assert [list(op.depends_on) for op in b.operations] == [[], [], ["op1", "two"]]
    assert (second.id, third.id) == ("two", "op3")


def test_operations_is_a_copy() -> None:
    b = Batch()
    b.call("echo")
    b.operations.clear()
    assert len(b) == 1 and len(b.operations) == 1


def test_many_rows_go_in_one_insert() -> None:
    b = Batch()
    b.insert("customers", [{"name": "a"}, {"name": "b"}], returning=["*"])
    [op] = b.operations
    assert [dict(r) for r in json_format.MessageToDict(op)["insert"]["rows"]] == \
        [{"name": "a"}, {"name": "b"}]
    assert list(op.insert.returning) == ["*"]


def request_json(b: Batch, **options: object) -> dict:
    return json_format.MessageToDict(b.to_request(**options))


# --- filters, order, conflicts ---------------------------------------------------------------

@pytest.mark.parametrize(("op", "name"), [
    ("eq", "EQ"), ("=", "EQ"), ("==", "EQ"), ("EQ", "EQ"), ("ne", "NE"), ("!=", "NE"),
    ("<>", "NE"), ("lt", "LT"), ("<", "LT"), ("le", "LE"), ("<=", "LE"), ("gt", "GT"),
    (">", "GT"), ("ge", "GE"), (">=", "GE"), ("in", "IN"), ("is_null", "IS_NULL"),
    ("Like", "LIKE"), ("ilike", "ILIKE"), ("OPERATOR_GE", "GE"), ("operator_in", "IN"),
])
def test_filter_operators_by_name_or_symbol(op: str, name: str) -> None:
    b = Batch()
    b.query("orders", [("status", op, "x")])
    assert request_json(b)["operations"][0]["query"]["filters"] == \
        [{"column": "status", "op": f"OPERATOR_{name}", "value": "x"}]


def test_a_filter_mapping_means_equality_on_each_column() -> None:
    b = Batch()
    b.delete("orders", filters={"status": "old", "customer_id": 2**60})
    assert request_json(b)["operations"][0]["delete"]["filters"] == [
        {"column": "status", "op": "OPERATOR_EQ", "value": "old"},
        {"column": "customer_id", "op": "OPERATOR_EQ", "value": "1152921504606846976"}]


def test_filter_messages_pass_through_and_malformed_filters_are_refused() -> None:
    b = Batch()
    given = batch_pb2.Filter(column="note", op=batch_pb2.Filter.OPERATOR_IS_NULL)
    b.query("order_items", [given])
    assert list(b.operations[0].query.filters) == [given]
    with pytest.raises(TypeError, match=r"\(column, op, value\)"):
        b.query("orders", [("status", "eq")])
    assert len(b) == 1


def test_where_groups_nest_filters_and_groups_and_count_reaches_the_request() -> None:
    b = Batch()
    b.query("events", where=any_of(("kind", "ilike", "b%"), all_of(
        ("score", ">=", 5), not_(("kind", "=", "view")))), count=True)
    assert request_json(b)["operations"][0]["query"] == {
        "table": "events", "count": True, "where": {
            "logic": "LOGIC_OR",
            "filters": [{"column": "kind", "op": "OPERATOR_ILIKE", "value": "b%"}],
            "groups": [{"logic": "LOGIC_AND",
                        "filters": [{"column": "score", "op": "OPERATOR_GE", "value": 5}],
                        "groups": [{"logic": "LOGIC_NOT", "filters": [
                            {"column": "kind", "op": "OPERATOR_EQ", "value": "view"}]}]}]}}


def test_update_and_delete_by_where_and_never_by_key_and_where() -> None:
    b = Batch()
    b.update("orders", where=any_of(("status", "=", "a"), ("status", "=", "b")),
             set={"status": "c"})
    b.delete("orders", filters=[("total", "<", 1)], where=not_(("status", "=", "c")))
    update, delete = request_json(b)["operations"]
    assert update["update"]["where"]["logic"] == "LOGIC_OR" and "key" not in update["update"]
    assert delete["delete"]["where"]["logic"] == "LOGIC_NOT"
    assert len(delete["delete"]["filters"]) == 1
    with pytest.raises(ValueError, match="exactly one of key= and filters="):
        b.delete("orders", key={"id": 1}, where=not_(("status", "=", "c")))
    assert len(b) == 2


def test_order_by_minus_means_descending_and_messages_pass_through() -> None:
    b = Batch()
    b.query("orders", order_by=["-total", batch_pb2.OrderBy(column="id", descending=True),
                                "status"])
    assert request_json(b)["operations"][0]["query"]["orderBy"] == [
        {"column": "total", "descending": True}, {"column": "id", "descending": True},
        {"column": "status"}]


@pytest.mark.parametrize(("spec", "columns", "expected"), [
    (None, (), None),
    ("error", (), None),
    ("do_nothing", (), {"action": "ACTION_DO_NOTHING"}),
    ("update", ["email"], {"action": "ACTION_UPDATE", "conflictColumns": ["email"]}),
    (("update", ["name"]), (), {"action": "ACTION_UPDATE", "updateColumns": ["name"]}),
    (batch_pb2.OnConflict(action=batch_pb2.OnConflict.ACTION_DO_NOTHING,
                          conflict_columns=["a"]), (),
     {"action": "ACTION_DO_NOTHING", "conflictColumns": ["a"]}),
], ids=["default", "error", "do_nothing", "update on columns", "update columns", "message"])
def test_on_conflict_forms(spec: object, columns: list[str], expected: dict | None) -> None:
    b = Batch()
    b.insert("customers", {"name": "a"}, on_conflict=spec, conflict_columns=columns)
    assert request_json(b)["operations"][0]["insert"].get("onConflict") == expected


@pytest.mark.parametrize(("spec", "error"), [
    (("update", "name"), TypeError), (("do_nothing", ["name"]), ValueError),
    ("upsert", ValueError),
])
def test_on_conflict_misuse_is_refused(spec: object, error: type[Exception]) -> None:
    b = Batch()
    with pytest.raises(error):
        b.insert("customers", {"name": "a"}, on_conflict=spec)
    assert len(b) == 0


def test_update_and_delete_carry_key_and_expected_version() -> None:
    b = Batch()
    b.update("orders", key={"id": 1}, set={"status": "paid"}, expected_version=3,
             returning=["version"])
    b.delete("orders", key={"id": 2}, expected_version=0)
    update, delete = request_json(b)["operations"]
    assert update["update"] == {"table": "orders", "key": {"id": 1}, "set": {"status": "paid"},
                                "expectedVersion": "3", "returning": ["version"]}
    assert delete["delete"] == {"table": "orders", "key": {"id": 2}, "expectedVersion": "0"}


def test_get_and_query_options_reach_the_request() -> None:
    b = Batch()
    b.get("customers", {"id": 1}, ["name"], include_deleted=True)
    b.query("orders", page_token="tok", columns=["id"])
    get, query = request_json(b)["operations"]
    assert get["get"] == {"table": "customers", "key": {"id": 1}, "columns": ["name"],
                          "includeDeleted": True}
    assert query["query"] == {"table": "orders", "pageToken": "tok", "columns": ["id"]}


# --- to_request ------------------------------------------------------------------------------

@pytest.mark.parametrize(("isolation", "expected"), [
    ("read_committed", "ISOLATION_LEVEL_READ_COMMITTED"),
    ("Repeatable Read", "ISOLATION_LEVEL_REPEATABLE_READ"),
    ("serializable", "ISOLATION_LEVEL_SERIALIZABLE"),
    ("ISOLATION_LEVEL_SERIALIZABLE", "ISOLATION_LEVEL_SERIALIZABLE"),
    (batch_pb2.ISOLATION_LEVEL_READ_COMMITTED, "ISOLATION_LEVEL_READ_COMMITTED"),
])
def test_isolation_by_short_name_full_name_or_number(isolation: object, expected: str) -> None:
    b = Batch()
    b.call("echo")
    assert request_json(b, isolation=isolation)["isolation"] == expected


@pytest.mark.parametrize("mode", ["independent", "INDEPENDENT", "MODE_INDEPENDENT",
                                  batch_pb2.MODE_INDEPENDENT])
def test_mode_by_short_name_full_name_or_number(mode: object) -> None:
    b = Batch()
    b.call("echo")
    assert b.to_request(mode=mode).mode == batch_pb2.MODE_INDEPENDENT


@pytest.mark.parametrize("options", [{"mode": 9}, {"isolation": "snapshot"}, {"isolation": 42}])
def test_unknown_mode_or_isolation_is_refused(options: dict) -> None:
    with pytest.raises(ValueError):
        Batch().to_request(**options)


def test_request_id_and_validate_only_reach_the_request() -> None:
    b = Batch()
    b.call("echo")
    request = b.to_request(request_id="r-1", validate_only=True)
    assert (request.request_id, request.validate_only) == ("r-1", True)
    assert b.to_request().request_id == ""


# --- what the server makes of it -------------------------------------------------------------

@pytest.mark.parametrize(("value", "column"), [
    (2**63 - 1, col("c", "int8", "bigint")),
    (-(2**63), col("c", "int8", "bigint")),
    (Decimal("12345678901234567890.123456789012345678"), col("c", "numeric")),
    (dt.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5))),
     col("c", "timestamptz")),
    (dt.datetime(2024, 1, 2, 3, 4, 5, 6), col("c", "timestamp")),
    (dt.date(2024, 2, 29), col("c", "date")),
    (uuid.UUID("6f1e4b1c-9a3b-4c8e-8f2e-0d9b1a7c5e33"), col("c", "uuid")),
    (b"\x00\xff binary", col("c", "bytea")),
    ([2**60, None, 1], col("c", "int8", "bigint[]", is_array=True)),
], ids=["int8 max", "int8 min", "numeric", "timestamptz", "timestamp", "date", "uuid", "bytea",
        "int8[]"])
def test_what_the_builder_sends_the_server_coerces_back_exactly(value: object,
                                                                column: object) -> None:
    assert coerce(from_proto(to_value(value)), column) == value


def test_a_builder_batch_plans_cleanly_with_its_references_as_dependencies() -> None:
    b = Batch()
    customer = b.insert("customers", {"name": "Ada", "email": "ada@x"})
    order = b.insert("orders", {"customer_id": customer.ref("id"), "total": Decimal("69.89")},
                     returning=["id", "version"])
    b.insert("order_items", {"order_id": order.ref("id"), "line": 1, "qty": 2})
    b.update("orders", key={"id": order.ref("id")}, set={"status": "paid"},
             expected_version=1)
    b.query("orders", [("customer_id", "in", [customer.ref("id")]), ("status", "!=", None)],
            order_by=["-total"], limit=10)
    p = plan_batch(b.to_request(), CTX, None)
    assert not p.invalid
    assert [s.depends_on for s in p.steps] == [[], ["op1"], ["op2"], ["op2"], ["op1"]]


def test_operations_added_in_a_group_block_carry_the_group() -> None:
    b = Batch()
    lone = b.insert("customers", {"name": "a", "email": "a@x"})
    with b.group("order1"):
        o = b.insert("orders", {"customer_id": lone.ref("id")}, returning=["id"])
        b.insert("order_items", {"order_id": o.ref("id"), "product_id": 1, "quantity": 1,
                                 "unit_price": "1.00"})
    request = b.to_request(mode="independent")
    assert [op.group for op in request.operations] == ["", "order1", "order1"]
    with b.group("g"), pytest.raises(ValueError, match="do not nest"):
        with b.group("h"):
            pass
