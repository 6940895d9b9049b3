"""Pure unit tests of batchd.values and batchd.kinds.params: no database, no server, no network.

The behaviours pinned here are the table of accepted and returned forms at the top of
protos/batchd/v1/batch.proto, plus references ({"$ref": ...} / {"$literal": ...}) and the
deferred coercion of values that contain them.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from batchd.catalog import Column
from batchd.errors import DependencyFailed, InvalidArgument
from batchd.kinds import params
from batchd.kinds.base import Output
from batchd.pgtext import MAX_SAFE_INTEGER, dumps_json, render_any
from batchd.pgtypes import Interval
from batchd.rendering import render_row, renderer_for, write_value
from batchd.values import (
    CoercionError,
    Ref,
    coerce,
    from_proto,
    parse_ref,
    plain_json,
    struct_from_proto,
)

UTC = dt.UTC


def col(family: str, is_array: bool = False, type_sql: str | None = None,
        name: str = "c") -> Column:
    if type_sql is None:
        type_sql = family + ("[]" if is_array else "")
    return Column(name=name, sql=f'"{name}"', type_sql=type_sql, cast_sql=type_sql, family=family,
                  is_array=is_array, nullable=True, has_default=False, generated=False)


def pv(value: Any) -> struct_pb2.Value:
    """A google.protobuf.Value from JSON-like Python, as a client would send it."""
    return json_format.ParseDict(value, struct_pb2.Value())


def ps(value: dict[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(value, struct_pb2.Struct())


# --- integers --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["int2", "int4", "int8"])
def test_integral_float_is_accepted_as_an_int(kind: str) -> None:
    result = coerce(42.0, col(kind))
    assert result == 42 and type(result) is int


@pytest.mark.parametrize("kind", ["int2", "int4", "int8"])
def test_python_int_is_accepted_unchanged(kind: str) -> None:
    assert coerce(-7, col(kind)) == -7


@pytest.mark.parametrize("kind", ["int2", "int4", "int8"])
@pytest.mark.parametrize("value", [1.5, -0.25, math.nan, math.inf, -math.inf])
def test_non_integral_number_for_an_integer_column_is_rejected(kind: str, value: float) -> None:
    with pytest.raises(CoercionError, match="expected an integer"):
        coerce(value, col(kind))


@pytest.mark.parametrize("kind", ["int2", "int4", "int8"])
@pytest.mark.parametrize("value", [True, False])
def test_bool_for_an_integer_column_is_rejected(kind: str, value: bool) -> None:
    with pytest.raises(CoercionError, match="expected an integer, got bool"):
        coerce(value, col(kind))


@pytest.mark.parametrize("kind", ["int2", "int4", "int8"])
@pytest.mark.parametrize(("text", "expected"), [("123", 123), ("-45", -45), ("+6", 6),
                                                (" 78 ", 78), ("0", 0)])
def test_decimal_string_for_an_integer_column_is_accepted(kind: str, text: str,
                                                          expected: int) -> None:
    result = coerce(text, col(kind))
    assert result == expected and type(result) is int


@pytest.mark.parametrize("kind", ["int2", "int4", "int8"])
@pytest.mark.parametrize("text", ["1.0", "1e3", "abc", "", "0x10", "1 2", "12abc"])
def test_non_decimal_string_for_an_integer_column_is_rejected(kind: str, text: str) -> None:
    with pytest.raises(CoercionError):
        coerce(text, col(kind))


@pytest.mark.parametrize("kind", ["int2", "int4", "int8"])
def test_other_types_for_an_integer_column_are_rejected_naming_the_type(kind: str) -> None:
    with pytest.raises(CoercionError, match="got bytes"):
        coerce(b"1", col(kind))


@pytest.mark.parametrize(("kind", "lowest", "highest"), [
    ("int2", -2**15, 2**15 - 1),
    ("int4", -2**31, 2**31 - 1),
    ("int8", -2**63, 2**63 - 1),
])
def test_integer_range_bounds_are_accepted(kind: str, lowest: int, highest: int) -> None:
    assert coerce(str(lowest), col(kind)) == lowest
    assert coerce(str(highest), col(kind)) == highest


@pytest.mark.parametrize(("kind", "value"), [
    ("int2", 40000.0), ("int2", "40000"), ("int2", 2**15), ("int2", -2**15 - 1),
    ("int4", float(2**31)), ("int4", str(2**31)), ("int4", -2**31 - 1),
    ("int8", str(2**63)), ("int8", 2**63), ("int8", str(-2**63 - 1)),
])
def test_integer_out_of_range_for_its_column_is_rejected(kind: str, value: Any) -> None:
    with pytest.raises(CoercionError, match=f"out of range for {kind}"):
        coerce(value, col(kind))


def test_int8_two_to_the_63_as_a_number_is_rejected() -> None:
    with pytest.raises(CoercionError):
        coerce(float(2**63), col("int8"))


def test_bigint_beyond_2_53_as_number_is_rejected_with_advice_to_send_a_string() -> None:
    with pytest.raises(CoercionError, match="string") as info:
        coerce(float(2**53 + 2), col("int8"))
    assert "2^53" in str(info.value)


def test_bigint_beyond_minus_2_53_as_number_is_rejected_with_advice_to_send_a_string() -> None:
    with pytest.raises(CoercionError, match="string"):
        coerce(-float(2**53 + 2), col("int8"))


def test_bigint_up_to_2_53_minus_1_as_number_is_accepted() -> None:
    assert coerce(float(MAX_SAFE_INTEGER), col("int8")) == 2**53 - 1
    assert coerce(-float(MAX_SAFE_INTEGER), col("int8")) == -(2**53 - 1)


def test_bigint_exactly_2_53_as_number_is_rejected_because_it_may_be_rounded() -> None:
    # 2**53 + 1 parses to the double 2**53: accepting 2**53 would store a silent neighbour.
    with pytest.raises(CoercionError, match="string"):
        coerce(float(2**53 + 1), col("int8"))


def test_bigint_beyond_2_53_as_string_is_kept_exact() -> None:
    assert coerce("9007199254740993", col("int8")) == 9007199254740993


def test_bigint_beyond_2_53_through_protobuf_as_string_is_kept_exact() -> None:
    assert coerce(from_proto(pv("9007199254740993")), col("int8")) == 2**53 + 1


def test_integral_decimal_is_accepted_for_an_integer_column() -> None:
    # e.g. a numeric value of an earlier operation's row, resolved through a reference
    assert coerce(Decimal("12.000"), col("int4")) == 12


def test_non_integral_decimal_is_rejected_for_an_integer_column() -> None:
    with pytest.raises(CoercionError):
        coerce(Decimal("12.5"), col("int4"))


def test_absurdly_long_digit_string_for_int8_is_rejected_as_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        params.prepare("1" * 5000, col("int8"), "operations[0].insert.rows[0].c", [])


@given(st.integers(min_value=-2**63, max_value=2**63 - 1))
def test_any_int8_sent_as_string_round_trips_exactly_through_coerce_and_render(n: int) -> None:
    column = col("int8")
    assert renderer_for(column)(coerce(str(n), column)) == str(n)


# --- numeric ---------------------------------------------------------------------------------

def test_numeric_string_stays_an_exact_decimal() -> None:
    result = coerce("12.345678901234567890", col("numeric"))
    assert isinstance(result, Decimal)
    assert result == Decimal("12.345678901234567890")
    assert str(result) == "12.345678901234567890"


def test_numeric_float_0_1_becomes_decimal_0_1_not_its_binary_expansion() -> None:
    result = coerce(0.1, col("numeric"))
    assert result == Decimal("0.1")
    assert result != Decimal.from_float(0.1)


def test_numeric_int_becomes_a_decimal() -> None:
    assert coerce(10**30, col("numeric")) == Decimal(10**30)


def test_numeric_string_keeps_its_scale() -> None:
    assert str(coerce("12.50", col("numeric"))) == "12.50"


def test_numeric_accepts_surrounding_whitespace() -> None:
    assert coerce(" 1.5 ", col("numeric")) == Decimal("1.5")


@pytest.mark.parametrize("text", ["abc", "", "1.2.3", "12,5", "--1"])
def test_numeric_garbage_string_is_rejected(text: str) -> None:
    with pytest.raises(CoercionError, match="not a decimal number"):
        coerce(text, col("numeric"))


@pytest.mark.parametrize("value", [True, b"1"])
def test_numeric_bool_and_other_types_are_rejected(value: Any) -> None:
    with pytest.raises(CoercionError, match="expected a decimal string or number"):
        coerce(value, col("numeric"))


@given(st.decimals(allow_nan=False, allow_infinity=False, places=6,
                   min_value=Decimal("-1e12"), max_value=Decimal("1e12")))
def test_any_numeric_sent_as_string_round_trips_with_its_exact_digits(d: Decimal) -> None:
    column = col("numeric")
    rendered = renderer_for(column)(coerce(str(d), column))
    assert isinstance(rendered, str)
    assert Decimal(rendered).as_tuple() == d.as_tuple()


# --- float -----------------------------------------------------------------------------------

def test_float_column_accepts_a_number() -> None:
    assert coerce(1.25, col("float")) == 1.25


def test_float_column_accepts_an_int_and_a_numeric_string() -> None:
    assert coerce(3, col("float")) == 3.0
    assert coerce("2.5", col("float")) == 2.5


def test_float_column_accepts_nan_string() -> None:
    assert math.isnan(coerce("NaN", col("float")))


@pytest.mark.parametrize(("text", "expected"), [("Infinity", math.inf), ("-Infinity", -math.inf)])
def test_float_column_accepts_infinity_strings(text: str, expected: float) -> None:
    assert coerce(text, col("float")) == expected


def test_float_column_rejects_a_bool() -> None:
    with pytest.raises(CoercionError, match="expected a number"):
        coerce(True, col("float"))


def test_float_column_rejects_a_garbage_string() -> None:
    with pytest.raises(CoercionError, match="not a number"):
        coerce("one", col("float"))


@pytest.mark.parametrize(("value", "expected"), [(math.nan, "NaN"), (math.inf, "Infinity"),
                                                 (-math.inf, "-Infinity")])
def test_float_nan_and_infinities_render_as_strings(value: float, expected: str) -> None:
    assert renderer_for(col("float"))(value) == expected
    assert render_any(value) == expected


def test_finite_float_renders_as_a_number() -> None:
    assert renderer_for(col("float"))(1.5) == 1.5


# --- bool, text, uuid ------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("true", True),
                                                 ("false", False), ("TRUE", True)])
def test_bool_column_accepts_bools_and_true_false_strings(value: Any, expected: bool) -> None:
    assert coerce(value, col("bool")) is expected


@pytest.mark.parametrize("value", [1.0, 0.0, "yes", "1", "t"])
def test_bool_column_rejects_numbers_and_other_strings(value: Any) -> None:
    with pytest.raises(CoercionError, match="expected a boolean"):
        coerce(value, col("bool"))


def test_text_column_accepts_a_string_unchanged() -> None:
    assert coerce("héllo ✓", col("text")) == "héllo ✓"


@pytest.mark.parametrize("value", [1.0, True])
def test_number_or_bool_for_a_text_column_is_rejected(value: Any) -> None:
    with pytest.raises(CoercionError, match="expected a string"):
        coerce(value, col("text"))


def test_uuid_column_accepts_a_valid_uuid_string() -> None:
    text = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert coerce(text, col("uuid")) == uuid.UUID(text)


def test_uuid_column_accepts_a_uuid_object() -> None:
    value = uuid.uuid4()
    assert coerce(value, col("uuid")) is value


@pytest.mark.parametrize("value", ["not-a-uuid", "a0eebc99-9c0b-4ef8-bb6d", "", 1.0])
def test_uuid_column_rejects_an_invalid_uuid(value: Any) -> None:
    with pytest.raises(CoercionError, match="is not a UUID"):
        coerce(value, col("uuid"))


# --- dates and times -------------------------------------------------------------------------

def test_date_column_accepts_yyyy_mm_dd() -> None:
    assert coerce("2024-02-29", col("date")) == dt.date(2024, 2, 29)


@pytest.mark.parametrize("value", ["2024-02-30", "2024-13-01", "yesterday", 20240101.0])
def test_date_column_rejects_an_invalid_date(value: Any) -> None:
    with pytest.raises(CoercionError):
        coerce(value, col("date"))


def test_date_column_accepts_a_date_object_but_not_a_datetime() -> None:
    assert coerce(dt.date(2024, 1, 2), col("date")) == dt.date(2024, 1, 2)
    with pytest.raises(CoercionError):
        coerce(dt.datetime(2024, 1, 2), col("date"))


def test_timestamptz_with_z_is_accepted_as_utc() -> None:
    result = coerce("2024-01-02T03:04:05Z", col("timestamptz"))
    assert result == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert result.utcoffset() == dt.timedelta(0)


def test_timestamptz_with_numeric_offset_keeps_the_instant() -> None:
    result = coerce("2024-01-02T05:04:05.123456+02:00", col("timestamptz"))
    assert result == dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert result.utcoffset() == dt.timedelta(hours=2)


def test_timestamptz_without_offset_is_rejected() -> None:
    with pytest.raises(CoercionError, match="offset"):
        coerce("2024-01-02T03:04:05", col("timestamptz"))


def test_timestamptz_as_a_number_is_rejected() -> None:
    with pytest.raises(CoercionError, match="as a string"):
        coerce(1704164645.0, col("timestamptz"))


def test_timestamp_without_offset_is_accepted() -> None:
    assert coerce("2024-01-02T03:04:05", col("timestamp")) == dt.datetime(2024, 1, 2, 3, 4, 5)


@pytest.mark.parametrize("text", ["2024-01-02T03:04:05+02:00", "2024-01-02T03:04:05Z"])
def test_timestamp_with_an_offset_is_rejected(text: str) -> None:
    with pytest.raises(CoercionError, match="takes no offset"):
        coerce(text, col("timestamp"))


def test_timestamp_garbage_is_rejected() -> None:
    with pytest.raises(CoercionError):
        coerce("not a time", col("timestamp"))


def test_time_column_accepts_hh_mm_ss() -> None:
    assert coerce("12:34:56", col("time")) == dt.time(12, 34, 56)


def test_time_column_rejects_garbage() -> None:
    with pytest.raises(CoercionError):
        coerce("25:00:00", col("time"))


H = 3_600_000_000


@pytest.mark.parametrize(("text", "expected"), [
    ("P1DT2H", Interval(0, 1, 2 * H)),
    ("PT30M", Interval(0, 0, H // 2)),
    ("PT1.5S", Interval(0, 0, 1_500_000)),
    ("P3D", Interval(0, 3, 0)),
    ("P1DT2H3M4S", Interval(0, 1, 2 * H + 3 * 60_000_000 + 4_000_000)),
    ("-PT1H", Interval(0, 0, -H)),
    ("P1Y2M3W", Interval(14, 21, 0)),
])
def test_interval_accepts_iso_8601_durations(text: str, expected: Interval) -> None:
    assert coerce(text, col("interval")) == expected


@pytest.mark.parametrize(("value", "expected"), [(90, Interval(0, 0, 90_000_000)),
                                                 (1.5, Interval(0, 0, 1_500_000)),
                                                 (-60.0, Interval(0, 0, -60_000_000))])
def test_interval_accepts_a_number_of_seconds(value: float, expected: Interval) -> None:
    assert coerce(value, col("interval")) == expected


@pytest.mark.parametrize("value", ["garbage", "P", "PT", "-P", "1 day", "P1H", True])
def test_interval_garbage_is_rejected(value: Any) -> None:
    with pytest.raises(CoercionError, match="ISO 8601 duration"):
        coerce(value, col("interval"))


@pytest.mark.parametrize("text", ["P1Y", "P2M", "P1W", "P1Y2M3DT4H"])
def test_interval_accepts_iso_8601_durations_with_years_months_or_weeks(text: str) -> None:
    coerce(text, col("interval"))


@pytest.mark.parametrize("value", ["P999999999999D", 1e20])
def test_interval_too_large_for_the_server_is_rejected_as_invalid_argument(value: Any) -> None:
    with pytest.raises(InvalidArgument):
        params.prepare(value, col("interval"), "operations[0].insert.rows[0].c", [])


@pytest.mark.parametrize("interval", [Interval(0, 1, 2 * H), Interval(0, 0, 26 * H + 500),
                                      Interval(-14, 3, -H), Interval(5, -2, 1), Interval()])
def test_interval_renders_as_an_iso_8601_duration_that_coerces_back(interval: Interval) -> None:
    column = col("interval")
    rendered = renderer_for(column)(interval)
    assert isinstance(rendered, str) and rendered.startswith("P")
    assert coerce(rendered, column) == interval


def test_interval_rendering_format() -> None:
    assert render_any(Interval(14, 3, 2 * H + 1_500_000)) == "P1Y2M3DT2H1.5S"
    assert render_any(Interval(0, 0, -H)) == "PT-1H"
    assert render_any(dt.timedelta(days=1, hours=2)) == "P1DT2H"


# --- bytea -----------------------------------------------------------------------------------

def test_bytea_base64_round_trips() -> None:
    data = bytes(range(256))
    text = base64.b64encode(data).decode()
    column = col("bytea")
    assert coerce(text, column) == data
    assert renderer_for(column)(data) == text


@pytest.mark.parametrize("text", ["not base64!", "abc", "YWJj\x00"])
def test_bytea_invalid_base64_is_rejected(text: str) -> None:
    with pytest.raises(CoercionError, match="base64"):
        coerce(text, col("bytea"))


def test_bytea_number_is_rejected() -> None:
    with pytest.raises(CoercionError, match="expected base64 text"):
        coerce(1.0, col("bytea"))


# --- json ------------------------------------------------------------------------------------

def test_json_integral_floats_become_ints_in_nested_values() -> None:
    result = coerce({"a": 2.0, "b": [1.0, 2.5, {"c": 3.0}], "d": "x", "e": None, "f": True},
                    col("json", type_sql="jsonb"))
    assert result == {"a": 2, "b": [1, 2.5, {"c": 3}], "d": "x", "e": None, "f": True}
    assert type(result["a"]) is int and type(result["b"][0]) is int
    assert type(result["b"][2]["c"]) is int and type(result["b"][1]) is float
    assert result["f"] is True


def test_json_column_accepts_a_top_level_list_and_scalars() -> None:
    column = col("json", type_sql="jsonb")
    assert coerce([1.0, "a"], column) == [1, "a"]
    assert coerce(3.0, column) == 3
    assert coerce("text", column) == "text"


def test_json_floats_beyond_2_53_stay_floats() -> None:
    assert type(plain_json(float(2**60))) is float


def test_json_renders_the_value_unchanged() -> None:
    value = {"a": [1, {"b": None}]}
    assert renderer_for(col("json"))(value) is value


# --- arrays and nulls ------------------------------------------------------------------------

def test_int8_array_accepts_a_list_of_numbers_and_strings() -> None:
    assert coerce([1.0, "9007199254740993", -3.0], col("int8", is_array=True)) == \
        [1, 9007199254740993, -3]


def test_array_accepts_nested_lists() -> None:
    assert coerce([[1.0, 2.0], [3.0, 4.0]], col("int4", is_array=True)) == [[1, 2], [3, 4]]


def test_array_keeps_null_elements() -> None:
    assert coerce([1.0, None, "3"], col("int8", is_array=True)) == [1, None, 3]
    assert coerce([["a", None], [None, "b"]], col("text", is_array=True)) == \
        [["a", None], [None, "b"]]


def test_array_elements_are_coerced_by_the_element_type() -> None:
    assert coerce(["2024-01-02"], col("date", is_array=True)) == [dt.date(2024, 1, 2)]
    with pytest.raises(CoercionError, match="expected a string"):
        coerce(["a", 1.0], col("text", is_array=True))
    with pytest.raises(CoercionError, match="expected an integer"):
        coerce([1.5], col("int8", is_array=True))


def test_scalar_for_an_array_column_is_rejected() -> None:
    with pytest.raises(CoercionError, match=r"expected a list \(column type int8\[\]\)"):
        coerce(1.0, col("int8", is_array=True))


def test_list_for_a_scalar_column_is_rejected() -> None:
    with pytest.raises(CoercionError, match=r"expected a scalar \(column type bigint\)"):
        coerce([1.0], col("int8", type_sql="bigint"))


def test_object_for_a_scalar_column_is_rejected() -> None:
    with pytest.raises(CoercionError, match="expected a scalar"):
        coerce({"a": 1.0}, col("text"))


@pytest.mark.parametrize("kind", ["int2", "int4", "int8", "numeric", "float", "bool", "text",
                                  "uuid", "date", "timestamptz", "timestamp", "time", "interval",
                                  "bytea", "json", "other"])
@pytest.mark.parametrize("is_array", [False, True])
def test_null_is_accepted_for_every_column_type(kind: str, is_array: bool) -> None:
    assert coerce(None, col(kind, is_array=is_array)) is None


# --- renderer_for ----------------------------------------------------------------------------

def test_int8_renders_as_a_string() -> None:
    assert renderer_for(col("int8"))(2**53 + 1) == "9007199254740993"
    assert renderer_for(col("int8"))(5) == "5"


@pytest.mark.parametrize("kind", ["int2", "int4"])
def test_smallint_and_integer_render_as_numbers(kind: str) -> None:
    assert renderer_for(col(kind))(5) == 5


def test_numeric_renders_as_a_string_keeping_its_scale() -> None:
    assert renderer_for(col("numeric"))(Decimal("12.50")) == "12.50"


def test_uuid_renders_as_a_string() -> None:
    value = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    assert renderer_for(col("uuid"))(value) == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"


def test_timestamptz_renders_as_isoformat_with_offset() -> None:
    value = dt.datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)
    rendered = renderer_for(col("timestamptz"))(value)
    assert rendered == "2024-01-02T03:04:05.123000+00:00"
    assert dt.datetime.fromisoformat(rendered) == value


def test_timestamp_and_date_and_time_render_as_isoformat() -> None:
    assert renderer_for(col("timestamp"))(dt.datetime(2024, 1, 2, 3, 4, 5)) == \
        "2024-01-02T03:04:05"
    assert renderer_for(col("date"))(dt.date(2024, 1, 2)) == "2024-01-02"
    assert renderer_for(col("time"))(dt.time(12, 34, 56)) == "12:34:56"


def test_bytea_renders_as_base64() -> None:
    assert renderer_for(col("bytea"))(b"\x00\x01hi") == "AAFoaQ=="
    assert renderer_for(col("bytea"))(memoryview(b"hi")) == "aGk="


def test_bool_and_text_render_unchanged() -> None:
    assert renderer_for(col("bool"))(True) is True
    assert renderer_for(col("text"))("x") == "x"


def test_arrays_render_element_wise_including_nested_and_null_elements() -> None:
    assert renderer_for(col("int8", is_array=True))([[1, None], [3, 2**60]]) == \
        [["1", None], ["3", str(2**60)]]
    assert renderer_for(col("numeric", is_array=True))([Decimal("1.50"), None]) == ["1.50", None]
    assert renderer_for(col("bytea", is_array=True))([b"hi"]) == ["aGk="]
    assert renderer_for(col("float", is_array=True))([math.nan, 1.0]) == ["NaN", 1.0]


@pytest.mark.parametrize("kind", ["int2", "int4", "int8", "numeric", "float", "bool", "text",
                                  "uuid", "date", "timestamptz", "timestamp", "time", "interval",
                                  "bytea", "json", "other"])
@pytest.mark.parametrize("is_array", [False, True])
def test_null_renders_as_null_for_every_column_type(kind: str, is_array: bool) -> None:
    assert renderer_for(col(kind, is_array=is_array))(None) is None


def test_render_row_builds_a_struct_by_column_name() -> None:
    renderers = [("id", renderer_for(col("int8"))), ("price", renderer_for(col("numeric"))),
                 ("n", renderer_for(col("int4"))), ("gone", renderer_for(col("text")))]
    row = render_row((2**60, Decimal("9.90"), 3, None), renderers)
    assert isinstance(row, struct_pb2.Struct)
    assert json_format.MessageToDict(row) == {"id": str(2**60), "price": "9.90", "n": 3.0,
                                              "gone": None}


def test_an_empty_json_object_or_list_is_written_as_itself_not_as_null() -> None:
    row = struct_pb2.Struct()
    for name, value in {"obj": {}, "list": [], "nested": {"a": {}, "b": [[], {}]}}.items():
        write_value(row.fields[name], value)
    assert json_format.MessageToDict(row) == {"obj": {}, "list": [],
                                              "nested": {"a": {}, "b": [[], {}]}}


# --- render_any ------------------------------------------------------------------------------

def test_render_any_int_beyond_2_53_becomes_a_string() -> None:
    assert render_any(2**53 + 1) == "9007199254740993"
    assert render_any(-(2**53 + 1)) == "-9007199254740993"


def test_render_any_small_int_stays_an_int() -> None:
    assert render_any(42) == 42 and type(render_any(42)) is int
    assert render_any(2**53 - 1) == 2**53 - 1
    assert render_any(2**53) == str(2**53)  # a double could not tell it from 2**53 + 1


def test_render_any_decimal_becomes_a_string() -> None:
    assert render_any(Decimal("1.10")) == "1.10"


def test_render_any_bool_stays_a_bool_not_an_int() -> None:
    assert render_any(True) is True


def test_render_any_handles_nested_containers_and_other_types() -> None:
    value = {1: [Decimal("2.5"), (b"hi", uuid.UUID(int=0))], "when": dt.date(2024, 1, 2),
             "none": None}
    assert render_any(value) == {
        "1": ["2.5", ["aGk=", "00000000-0000-0000-0000-000000000000"]],
        "when": "2024-01-02", "none": None}


def test_dumps_json_uses_render_any_for_non_json_types() -> None:
    assert dumps_json({"a": Decimal("1.50"), "b": "é"}) == '{"a":"1.50","b":"é"}'


# --- from_proto and references ---------------------------------------------------------------

def test_from_proto_plain_values() -> None:
    assert from_proto(pv("s")) == "s"
    assert from_proto(pv(2)) == 2.0 and type(from_proto(pv(2))) is float
    assert from_proto(pv(True)) is True
    assert from_proto(pv(None)) is None
    assert from_proto(struct_pb2.Value()) is None
    assert from_proto(pv([1, "a", [None]])) == [1.0, "a", [None]]
    assert from_proto(pv({"a": {"b": 1}})) == {"a": {"b": 1.0}}


def test_ref_with_operation_and_column_refers_to_row_0() -> None:
    assert from_proto(pv({"$ref": "op.col"})) == Ref("op", 0, "col")


def test_ref_with_row_index_refers_to_that_row() -> None:
    assert from_proto(pv({"$ref": "op.2.col"})) == Ref("op", 2, "col")


def test_ref_str_is_the_full_form() -> None:
    assert str(Ref("op", 0, "col")) == "op.0.col"


def test_refs_are_found_nested_in_lists_and_objects() -> None:
    assert from_proto(pv({"a": [{"$ref": "x.id"}, 1], "b": {"$ref": "y.3.name"}})) == \
        {"a": [Ref("x", 0, "id"), 1.0], "b": Ref("y", 3, "name")}


def test_struct_from_proto_turns_refs_into_ref_objects() -> None:
    assert struct_from_proto(ps({"id": {"$ref": "a.id"}, "n": 1, "s": "x"})) == \
        {"id": Ref("a", 0, "id"), "n": 1.0, "s": "x"}


@pytest.mark.parametrize("text", ["op", "op.x.y.z", "op..c", ".c", "op.", "op.x.col",
                                  "op.-1.col", "", "op.1.2.c"])
def test_malformed_ref_raises_coercion_error(text: str) -> None:
    with pytest.raises(CoercionError, match="must be"):
        from_proto(pv({"$ref": text}))
    with pytest.raises(CoercionError):
        parse_ref(text)


def test_malformed_ref_inside_a_struct_raises_coercion_error() -> None:
    with pytest.raises(CoercionError):
        struct_from_proto(ps({"id": {"$ref": "op"}}))


def test_ref_with_a_superscript_digit_row_raises_coercion_error() -> None:
    with pytest.raises(CoercionError):
        parse_ref("op.².col")


def test_literal_wrapping_a_ref_object_yields_the_plain_dict() -> None:
    assert from_proto(pv({"$literal": {"$ref": "x.y"}})) == {"$ref": "x.y"}


def test_literal_keeps_nested_ref_objects_as_data() -> None:
    assert from_proto(pv({"$literal": [{"$ref": "x.y"}, {"a": {"$ref": "bad"}}]})) == \
        [{"$ref": "x.y"}, {"a": {"$ref": "bad"}}]


def test_literal_of_a_scalar_is_the_scalar() -> None:
    assert from_proto(pv({"$literal": 5})) == 5.0


def test_ref_plus_another_key_is_a_plain_dict() -> None:
    assert from_proto(pv({"$ref": "op.col", "other": 1})) == {"$ref": "op.col", "other": 1.0}


def test_ref_with_a_non_string_value_is_a_plain_dict() -> None:
    assert from_proto(pv({"$ref": 5})) == {"$ref": 5.0}


def test_literal_plus_another_key_is_a_plain_dict() -> None:
    assert from_proto(pv({"$literal": 1, "x": 2})) == {"$literal": 1.0, "x": 2.0}


# --- params.prepare --------------------------------------------------------------------------

PATH = "operations[3].insert.rows[1].c"


def test_prepare_coerces_a_value_without_references() -> None:
    assert params.prepare("9007199254740993", col("int8"), PATH, []) == 9007199254740993


def test_prepare_defers_a_value_holding_references() -> None:
    column = col("int8", is_array=True)
    value = [1.0, Ref("op", 0, "id")]
    prepared = params.prepare(value, column, PATH, [])
    assert isinstance(prepared, params.Deferred)
    assert prepared.raw == value and prepared.column is column and prepared.path == PATH


def test_prepare_bad_value_raises_invalid_argument_naming_the_path() -> None:
    column = col("int4", type_sql="integer", name="qty")
    with pytest.raises(InvalidArgument) as info:
        params.prepare("many", column, PATH, [])
    err = info.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(err.violations) == 1
    assert err.violations[0].field == PATH
    assert "qty" in err.violations[0].description and "integer" in err.violations[0].description
    assert not isinstance(err, CoercionError)


def test_prepare_collects_the_refs_it_meets() -> None:
    a, b, c = Ref("a", 0, "id"), Ref("b", 1, "x"), Ref("c", 0, "y")
    refs: list[Ref] = []
    params.prepare(a, col("int8"), PATH, refs)
    params.prepare({"k": [b, {"z": c}]}, col("json"), PATH, refs)
    params.prepare(1.0, col("int8"), PATH, refs)
    assert refs == [a, b, c]


def test_refs_of_separate_operations_stay_separate() -> None:
    outer_ref, inner_ref = Ref("o", 0, "c"), Ref("i", 0, "c")
    outer: list[Ref] = []
    inner: list[Ref] = []
    params.prepare(inner_ref, col("int8"), PATH, inner)
    params.prepare(outer_ref, col("int8"), PATH, outer)
    assert inner == [inner_ref] and outer == [outer_ref]


def test_prepare_of_a_reference_defers() -> None:
    assert isinstance(params.prepare(Ref("a", 0, "id"), col("int8"), PATH, []), params.Deferred)


def test_find_refs_walks_lists_and_dicts() -> None:
    r1, r2 = Ref("a", 0, "x"), Ref("b", 2, "y")
    assert params.find_refs({"p": [1, r1, {"q": r2}], "s": "t"}) == [r1, r2]
    assert params.find_refs([1, "a", {"b": None}]) == []


# --- params.Results --------------------------------------------------------------------------

def results_with(**rows: list[dict[str, Any]]) -> params.Results[Output]:
    results: params.Results[Output] = params.Results()
    for op, op_rows in rows.items():
        results.record(op, Output(op_rows))
    return results


def test_finalize_resolves_and_coerces_a_deferred_value() -> None:
    results = results_with(a=[{"id": 2**60, "price": Decimal("9.90")},
                              {"id": 7, "price": Decimal("1.00")}])
    deferred = params.prepare(Ref("a", 1, "id"), col("int4"), PATH, [])
    assert results.finalize(deferred) == 7
    deferred = params.prepare(Ref("a", 0, "id"), col("int8"), PATH, [])
    assert results.finalize(deferred) == 2**60


def test_finalize_resolves_refs_nested_in_arrays_and_json() -> None:
    when = dt.datetime(2024, 1, 2, tzinfo=UTC)
    results = results_with(a=[{"id": 5, "when": when, "tag": "x"}])
    array = params.prepare([Ref("a", 0, "id"), 6.0, None], col("int8", is_array=True), PATH, [])
    assert results.finalize(array) == [5, 6, None]
    doc = params.prepare({"ids": [Ref("a", 0, "id"), 2.0], "tag": Ref("a", 0, "tag")},
                         col("json"), PATH, [])
    assert results.finalize(doc) == {"ids": [5, 2], "tag": "x"}
    ts = params.prepare(Ref("a", 0, "when"), col("timestamptz"), PATH, [])
    assert results.finalize(ts) == when


def test_finalize_returns_prepared_values_unchanged() -> None:
    results = params.Results()
    value = Decimal("1.5")
    assert results.finalize(value) is value
    assert results.finalize(None) is None


def test_finalize_all_finalizes_every_value() -> None:
    results = results_with(a=[{"id": 1}])
    values = [params.prepare(Ref("a", 0, "id"), col("int8"), PATH, []), "x", None]
    assert results.finalize_all(values) == [1, "x", None]


def test_reference_to_a_row_past_the_end_raises_dependency_failed() -> None:
    results = results_with(a=[{"id": 1}])
    deferred = params.prepare(Ref("a", 1, "id"), col("int8"), PATH, [])
    with pytest.raises(DependencyFailed, match=r"returned 1 row\(s\)") as info:
        results.finalize(deferred)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert PATH in str(info.value)


def test_reference_to_an_operation_with_no_rows_raises_dependency_failed() -> None:
    results = results_with(a=[])
    with pytest.raises(DependencyFailed):
        results.finalize(params.prepare(Ref("a", 0, "id"), col("int8"), PATH, []))


def test_reference_to_an_operation_without_result_raises_dependency_failed() -> None:
    with pytest.raises(DependencyFailed, match="has no result"):
        params.Results().finalize(params.prepare(Ref("zz", 0, "id"), col("int8"), PATH, []))


def test_reference_to_a_missing_column_raises_dependency_failed() -> None:
    results = results_with(a=[{"id": 1}])
    with pytest.raises(DependencyFailed, match='no column "nope"'):
        results.finalize(params.prepare(Ref("a", 0, "nope"), col("int8"), PATH, []))


def test_resolved_value_that_does_not_fit_raises_invalid_argument_naming_the_path() -> None:
    results = results_with(a=[{"name": "not a number"}])
    deferred = params.prepare(Ref("a", 0, "name"), col("int8"), PATH, [])
    with pytest.raises(InvalidArgument) as info:
        results.finalize(deferred)
    assert info.value.violations[0].field == PATH


def test_resolved_value_out_of_range_raises_invalid_argument() -> None:
    results = results_with(a=[{"id": 2**40}])
    with pytest.raises(InvalidArgument, match="out of range for int4"):
        results.finalize(params.prepare(Ref("a", 0, "id"), col("int4"), PATH, []))


def test_results_is_a_mapping_of_recorded_rows() -> None:
    rows = [{"id": 1}]
    results = results_with(a=rows, b=[])
    assert len(results) == 2
    assert list(results) == ["a", "b"]
    assert results["a"] is rows
    assert "b" in results and "c" not in results


def test_a_number_for_a_text_column_says_it_got_a_number() -> None:
    with pytest.raises(CoercionError, match="expected a string, got a number"):
        coerce(5.0, col("text"))
