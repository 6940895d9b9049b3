"""batchd.kinds.filters and batchd.kinds.params.SqlParams: keys, filters and keyset pages as
WHERE-clause text (placeholders and catalog identifiers only) plus bound values."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from decimal import Decimal
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from batchd.errors import InvalidArgument
from batchd.kinds.base import Output
from batchd.kinds.filters import (
    Selection,
    SortKey,
    after_sql,
    decode_token,
    encode_token,
    fingerprint,
    plan_filters,
    plan_key,
    sort_keys,
)
from batchd.kinds.params import Deferred, Results, SqlParams
from batchd.v1 import batch_pb2
from batchd.values import Ref
from tests.unit.shop import col, shop_table, table

PATH = "operations[0].query.filters"


def filters(*specs: dict[str, Any]) -> list[batch_pb2.Filter]:
    return [json_format.ParseDict(s, batch_pb2.Filter()) for s in specs]


def order(*columns: str) -> list[batch_pb2.OrderBy]:
    """"col" ascending, "-col" descending."""
    return [batch_pb2.OrderBy(column=c.lstrip("-"), descending=c.startswith("-"))
            for c in columns]


def where(selection: Selection, results: Results | None = None) -> tuple[str, list[Any]]:
    params = SqlParams()
    return selection.sql(params, results or Results()), params.values


def where_filters(tbl: str, *specs: dict[str, Any]) -> tuple[str, list[Any]]:
    return where(Selection(plan_filters(shop_table(tbl), filters(*specs), PATH, [])))


def invalid(tbl: str, *specs: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        plan_filters(shop_table(tbl), filters(*specs), PATH, [])
    [violation] = caught.value.violations
    return violation.field, violation.description


def key(**values: Any) -> struct_pb2.Struct:
    return json_format.ParseDict(values, struct_pb2.Struct())


# --- bound parameters ------------------------------------------------------------------------

def test_sql_params_number_placeholders_in_order_and_cast_them() -> None:
    params = SqlParams()
    assert [params.add("a"), params.add(2, "bigint"), params.add(None, "text[]")] == \
        ["$1", "$2::bigint", "$3::text[]"]
    assert params.values == ["a", 2, None]


# --- primary keys ----------------------------------------------------------------------------

def test_a_key_is_one_equality_per_key_column_in_key_order() -> None:
    conditions = plan_key(shop_table("order_items"), key(line=2, order_id="9007199254740993"),
                          "k", [])
    assert where(Selection(conditions, by_key=True)) == \
        ('"order_id" = $1::bigint AND "line" = $2::integer', [9007199254740993, 2])


def test_a_key_value_is_coerced_and_a_bad_one_names_its_column() -> None:
    with pytest.raises(InvalidArgument) as caught:
        plan_key(shop_table("orders"), key(id="seven"), "operations[0].get.key", [])
    assert caught.value.violations[0].field == "operations[0].get.key.id"


def test_a_key_reference_is_resolved_when_the_statement_is_built() -> None:
    refs: list[Ref] = []
    conditions = plan_key(shop_table("orders"), key(id={"$ref": "c.1.id"}), "k", refs)
    assert refs == [Ref("c", 1, "id")] and isinstance(conditions[0].value, Deferred)
    results = Results()
    results.record("c", Output([{"id": 1}, {"id": 2**62}]))
    assert where(Selection(conditions), results) == ('"id" = $1::bigint', [2**62])


# --- filters ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("op", "sql"), [("EQ", "="), ("NE", "<>"), ("LT", "<"), ("LE", "<="),
                                         ("GT", ">"), ("GE", ">=")])
def test_comparisons_bind_the_value_cast_to_the_column_type(op: str, sql: str) -> None:
    assert where_filters("orders",
                         {"column": "total", "op": f"OPERATOR_{op}", "value": "10.50"}) == \
        (f'"total" {sql} $1::numeric', [Decimal("10.50")])


def test_the_cast_drops_type_modifiers_so_nothing_is_silently_truncated() -> None:
    assert where_filters("orders", {"column": "status", "op": "OPERATOR_EQ", "value": "paid"}) == \
        ('"status" = $1::character varying', ["paid"])


@pytest.mark.parametrize(("op", "sql"), [("EQ", '"status" IS NULL'),
                                         ("NE", '"status" IS NOT NULL')])
def test_eq_and_ne_null_mean_is_null_and_is_not_null(op: str, sql: str) -> None:
    assert where_filters("orders",
                         {"column": "status", "op": f"OPERATOR_{op}", "value": None}) == (sql, [])
    assert where_filters("orders", {"column": "status", "op": f"OPERATOR_{op}"}) == (sql, [])


@pytest.mark.parametrize("op", ["LT", "LE", "GT", "GE"])
def test_an_order_comparison_with_null_is_invalid(op: str) -> None:
    assert invalid("orders", {"column": "total", "op": f"OPERATOR_{op}"}) == \
        (f"{PATH}[0].value", "a value is required (use OPERATOR_IS_NULL for nulls)")


@pytest.mark.parametrize(("value", "sql"), [({}, '"note" IS NULL'),
                                            ({"value": True}, '"note" IS NULL'),
                                            ({"value": False}, '"note" IS NOT NULL')])
def test_is_null_takes_an_optional_bool(value: dict[str, Any], sql: str) -> None:
    assert where_filters("order_items",
                         {"column": "note", "op": "OPERATOR_IS_NULL", **value}) == (sql, [])


def test_is_null_with_anything_but_a_bool_is_invalid() -> None:
    assert invalid("order_items", {"column": "note", "op": "OPERATOR_IS_NULL", "value": "yes"}) == \
        (f"{PATH}[0].value", "OPERATOR_IS_NULL takes true or false")


def test_in_is_any_of_an_array_of_the_column_type() -> None:
    assert where_filters("orders", {"column": "customer_id", "op": "OPERATOR_IN",
                                    "value": [1, "1152921504606846976", None]}) == \
        ('"customer_id" = ANY($1::bigint[])', [[1, 2**60, None]])


def test_in_with_an_element_that_does_not_fit_is_invalid() -> None:
    field, description = invalid("orders", {"column": "customer_id", "op": "OPERATOR_IN",
                                            "value": [1, "x"]})
    assert field == f"{PATH}[0].value" and "customer_id" in description


@pytest.mark.parametrize(("spec", "field", "description"), [
    ({"column": "customer_id", "op": "OPERATOR_IN", "value": 1}, "value",
     "OPERATOR_IN takes a list of values"),
    ({"column": "tags", "op": "OPERATOR_IN", "value": [["a"]]}, "op",
     "OPERATOR_IN is not supported on array columns"),
], ids=["not a list", "array column"])
def test_in_needs_a_list_and_a_scalar_column(spec: dict[str, Any], field: str,
                                             description: str) -> None:
    tbl = "customers" if spec["column"] == "tags" else "orders"
    assert invalid(tbl, spec) == (f"{PATH}[0].{field}", description)


@pytest.mark.parametrize("op", ["LIKE", "ILIKE"])
def test_like_and_ilike_bind_a_text_pattern(op: str) -> None:
    assert where_filters("customers",
                         {"column": "email", "op": f"OPERATOR_{op}", "value": "%@x"}) == \
        (f'"email" {op} $1::text', ["%@x"])


@pytest.mark.parametrize("op", ["LIKE", "ILIKE"])
@pytest.mark.parametrize(("tbl", "spec", "field", "description"), [
    ("orders", {"column": "total", "value": "1%"}, "op", "works on text columns only"),
    ("customers", {"column": "tags", "value": "a%"}, "op", "works on text columns only"),
    ("customers", {"column": "email", "value": 5}, "value", "takes a pattern string"),
    ("customers", {"column": "email"}, "value", "takes a pattern string"),
], ids=["numeric column", "array column", "number pattern", "no pattern"])
def test_like_and_ilike_need_a_text_column_and_a_string(op: str, tbl: str, spec: dict[str, Any],
                                                        field: str, description: str) -> None:
    assert invalid(tbl, spec | {"op": f"OPERATOR_{op}"}) == \
        (f"{PATH}[0].{field}", f"{op} {description}")


def test_a_filter_needs_an_operator() -> None:
    field, description = invalid("orders", {"column": "id", "op": "OPERATOR_EQ", "value": 1},
                                 {"column": "id", "value": 1})
    assert field == f"{PATH}[1].op" and description.startswith("an operator is required")
    # An unset operator is what a lenient JSON parser makes of a 0.1.0 name: say the new one.
    assert 'in JSON, 0.1.0\'s "EQ" is "OPERATOR_EQ" since 0.2.0' in description


@pytest.mark.parametrize("column", ["nope", "Status", "status "])
def test_a_filter_column_must_be_exactly_a_column_of_the_table(column: str) -> None:
    assert invalid("orders", {"column": column, "op": "OPERATOR_EQ", "value": 1}) == \
        (f"{PATH}[0].column", f'table "public.orders" has no column "{column}"')


def test_a_filter_value_that_does_not_fit_names_the_filter() -> None:
    field, description = invalid("orders", {"column": "id", "op": "OPERATOR_GT", "value": 1},
                                 {"column": "total", "op": "OPERATOR_LT", "value": "ten"})
    assert field == f"{PATH}[1].value" and "total, numeric(12,2)" in description


def test_conditions_are_anded_and_each_binds_its_own_parameter() -> None:
    assert where_filters("orders", {"column": "status", "op": "OPERATOR_EQ", "value": "new"},
                         {"column": "total", "op": "OPERATOR_GE", "value": 5},
                         {"column": "customer_id", "op": "OPERATOR_IS_NULL", "value": False}) == \
        ('"status" = $1::character varying AND "total" >= $2::numeric AND '
         '"customer_id" IS NOT NULL', ["new", Decimal(5)])


def test_a_selection_hides_soft_deleted_rows() -> None:
    customers = shop_table("customers")
    deleted_at = customers.columns["deleted_at"]
    conditions = plan_filters(
        customers, filters({"column": "name", "op": "OPERATOR_EQ", "value": "A"}), PATH, [])
    assert where(Selection(conditions, soft_delete=deleted_at)) == \
        ('"name" = $1::text AND "deleted_at" IS NULL', ["A"])
    assert where(Selection([], soft_delete=deleted_at)) == ('"deleted_at" IS NULL', [])
    assert where(Selection([])) == ("TRUE", [])


def test_identifiers_are_quoted_from_the_catalog_and_values_are_only_parameters() -> None:
    odd = shop_table('Odd "Name"')
    hostile = "x'; DROP TABLE customers; --"
    conditions = plan_filters(
        odd, filters({"column": 'we"ird', "op": "OPERATOR_EQ", "value": hostile}), PATH, [])
    sql, values = where(Selection(conditions))
    assert sql == '"we""ird" = $1::text' and values == [hostile]
    assert odd.sql == '"public"."Odd ""Name"""'


def test_filter_references_are_collected_and_resolved_at_run_time() -> None:
    refs: list[Ref] = []
    conditions = plan_filters(shop_table("orders"), filters(
        {"column": "customer_id", "op": "OPERATOR_IN",
         "value": [{"$ref": "a.id"}, {"$ref": "a.1.id"}]},
        {"column": "status", "op": "OPERATOR_EQ", "value": {"$ref": "b.status"}}), PATH, refs)
    assert refs == [Ref("a", 0, "id"), Ref("a", 1, "id"), Ref("b", 0, "status")]
    results = Results()
    results.record("a", Output([{"id": 4}, {"id": "5"}]))
    results.record("b", Output([{"status": None}]))
    assert where(Selection(conditions), results) == \
        ('"customer_id" = ANY($1::bigint[]) AND "status" IS NULL', [[4, 5]])


# --- order and page tokens -------------------------------------------------------------------

def test_the_primary_key_is_appended_so_the_order_is_total() -> None:
    keys = sort_keys(shop_table("order_items"), order("-qty"), "o")
    assert [k.sql for k in keys] == ['"qty" DESC', '"order_id" ASC', '"line" ASC']


def test_a_key_column_already_in_the_order_keeps_its_place_and_direction() -> None:
    keys = sort_keys(shop_table("order_items"), order("-line", "note"), "o")
    assert [k.sql for k in keys] == ['"line" DESC', '"note" ASC', '"order_id" ASC']


def test_no_order_is_the_primary_key() -> None:
    assert [k.sql for k in sort_keys(shop_table("orders"), [], "o")] == ['"id" ASC']


@pytest.mark.parametrize(("columns", "field", "description"), [
    (("qty", "-qty"), "o[1].column", '"qty" is listed twice'),
    (("qty", "nope"), "o[1].column", 'table "public.order_items" has no column "nope"'),
])
def test_an_order_column_must_exist_and_be_listed_once(columns: tuple[str, ...], field: str,
                                                       description: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        sort_keys(shop_table("order_items"), order(*columns), "o")
    assert [(v.field, v.description) for v in caught.value.violations] == [(field, description)]


def q(**fields: Any) -> batch_pb2.QueryOperation:
    return json_format.ParseDict({"table": "orders", **fields}, batch_pb2.QueryOperation())


def test_a_query_fingerprint_ignores_limit_token_and_columns() -> None:
    base = q(filters=[{"column": "status", "op": "OPERATOR_EQ", "value": "new"}], orderBy=[
        {"column": "total"}])
    same = q(filters=[{"column": "status", "op": "OPERATOR_EQ", "value": "new"}], orderBy=[
        {"column": "total"}], limit=7, pageToken="abc", columns=["id"])
    assert fingerprint(base) == fingerprint(same)
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint(base))


@pytest.mark.parametrize("other", [
    {"filters": [{"column": "status", "op": "OPERATOR_EQ", "value": "old"}], "orderBy": [
        {"column": "total"}]},
    {"filters": [{"column": "status", "op": "OPERATOR_EQ", "value": "new"}], "orderBy": [
        {"column": "total", "descending": True}]},
    {"filters": [{"column": "status", "op": "OPERATOR_EQ", "value": "new"}], "orderBy": [
        {"column": "total"}], "includeDeleted": True},
    {"table": "customers", "filters": [{"column": "status", "op": "OPERATOR_EQ", "value": "new"}],
     "orderBy": [{"column": "total"}]},
], ids=["filter value", "direction", "include_deleted", "table"])
def test_a_query_fingerprint_changes_with_what_the_query_selects(other: dict[str, Any]) -> None:
    base = q(filters=[{"column": "status", "op": "OPERATOR_EQ", "value": "new"}], orderBy=[
        {"column": "total"}])
    assert fingerprint(base) != fingerprint(q(**other))


PAGED = table("public.paged", [
    col("id", "int8", "bigint", nullable=False),
    col("at", "timestamptz", "timestamp with time zone"),
    col("total", "numeric", "numeric(12,2)"),
    col("a", "int4", "integer"),
    col("b", "int4", "integer"),
], ("id",))


def test_a_page_token_round_trips_the_last_row_exactly() -> None:
    keys = sort_keys(PAGED, order("-at", "total"), "o")
    row = {"at": dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.UTC),
           "total": Decimal("12345678901.10"), "id": 2**63 - 1}
    token = encode_token(keys, row, "f" * 16)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)  # URL-safe, no padding
    assert decode_token(token, keys, "f" * 16, "t") == [row["at"], row["total"], row["id"]]


def test_a_page_token_keeps_nulls() -> None:
    keys = sort_keys(PAGED, order("a", "-b"), "o")
    token = encode_token(keys, {"a": None, "b": None, "id": 3}, "q")
    assert decode_token(token, keys, "q", "t") == [None, None, 3]


def token_of(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize("token", [
    "!!!not base64",
    "é",
    token_of("just a string")[:-1] + "A",
    base64.urlsafe_b64encode(b"\xff\xfe{").decode(),
    base64.urlsafe_b64encode(b"{not json").decode(),
    token_of(["q", "v"]),
    token_of({"q": "fp"}),
    token_of({"q": "fp", "v": "1"}),
    token_of({"q": "fp", "v": [1, 2]}),
    token_of({"q": "fp", "v": ["x"]}),
    token_of({"q": "fp", "v": [{"id": 1}]}),
], ids=["punctuation", "non-ascii", "json string", "not utf-8", "not json", "a list",
        "no values", "values not a list", "too many values", "not an integer", "an object"])
def test_a_malformed_page_token_is_invalid_naming_the_field(token: str) -> None:
    keys = sort_keys(shop_table("orders"), [], "o")
    with pytest.raises(InvalidArgument) as caught:
        decode_token(token, keys, "fp", "operations[0].query.page_token")
    assert [(v.field, v.description) for v in caught.value.violations] == \
        [("operations[0].query.page_token", "malformed page token")]


def test_a_deeply_nested_page_token_is_malformed_not_a_crash() -> None:
    keys = sort_keys(shop_table("orders"), [], "o")
    nested = '{"q":"fp","v":' + "[" * 5000 + "]" * 5000 + "}"
    token = base64.urlsafe_b64encode(nested.encode()).decode()
    with pytest.raises(InvalidArgument, match="malformed page token"):
        decode_token(token, keys, "fp", "operations[0].query.page_token")


def test_a_page_token_of_another_query_is_invalid() -> None:
    keys = sort_keys(shop_table("orders"), [], "o")
    token = encode_token(keys, {"id": 5}, "aaaa")
    with pytest.raises(InvalidArgument) as caught:
        decode_token(token, keys, "bbbb", "p")
    assert caught.value.violations[0].description == \
        "the page token belongs to a different query"


# --- keyset conditions -----------------------------------------------------------------------

def keyset(*columns: str, values: list[Any]) -> tuple[str, list[Any]]:
    params = SqlParams()
    return after_sql(sort_keys(PAGED, order(*columns), "o"), values, params), params.values


def test_after_an_ascending_value_come_greater_values_then_nulls() -> None:
    assert keyset("a", values=[5, 1]) == (
        '((("a" > $1::integer OR "a" IS NULL)) OR '
        '("a" = $2::integer AND ("id" > $3::bigint OR "id" IS NULL)))', [5, 5, 1])


def test_after_a_descending_value_come_smaller_values() -> None:
    assert keyset("-a", values=[5, 1]) == (
        '(("a" < $1::integer) OR ("a" = $2::integer AND ("id" > $3::bigint OR "id" IS NULL)))',
        [5, 5, 1])


def test_after_null_ascending_only_nulls_remain() -> None:
    assert keyset("a", values=[None, 1]) == (
        '(("a" IS NULL AND ("id" > $1::bigint OR "id" IS NULL)))', [1])


def test_after_null_descending_come_all_values() -> None:
    assert keyset("-a", values=[None, 1]) == (
        '(("a" IS NOT NULL) OR ("a" IS NULL AND ("id" > $1::bigint OR "id" IS NULL)))', [1])


def test_after_the_last_possible_position_nothing_comes() -> None:
    params = SqlParams()
    only_a = [SortKey(PAGED.columns["a"], descending=False)]
    assert (after_sql(only_a, [None], params), params.values) == ("FALSE", [])


def holds(sql: str, values: list[Any], row: dict[str, Any]) -> bool:
    """Whether ``row`` satisfies the keyset condition ``sql``, with SQL's NULL semantics (a
    comparison with NULL is unknown, and unknown is not true). Only the forms after_sql
    writes are understood."""
    def compare(left: Any, op: str, right: Any) -> bool | None:
        if left is None or right is None:
            return None
        return {"=": left == right, "<": left < right, ">": left > right}[op]

    expr = re.sub(r'"(\w+)" IS NOT NULL', r'(row["\1"] is not None)', sql)
    expr = re.sub(r'"(\w+)" IS NULL', r'(row["\1"] is None)', expr)
    expr = re.sub(r'"(\w+)" ([=<>]) \$(\d+)::\w+', r'compare(row["\1"], "\2", values[\3 - 1])',
                  expr)
    expr = expr.replace(" AND ", " and ").replace(" OR ", " or ").replace("FALSE", "False")
    assert re.fullmatch(r'[\w\s()\[\]"=<>,.-]*', expr), expr
    return bool(eval(expr, {"compare": compare, "row": row, "values": values}))


def postgres_order(keys: list[SortKey]) -> Any:
    """PostgreSQL's default order: ASC NULLS LAST, DESC NULLS FIRST."""
    def sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
        parts: list[Any] = []
        for k in keys:
            v = row[k.column.name]
            if k.descending:
                parts += [v is not None, -v if v is not None else 0]
            else:
                parts += [v is None, v if v is not None else 0]
        return tuple(parts)
    return sort_key


small = st.one_of(st.none(), st.integers(-2, 2))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(small, small), min_size=1, max_size=10),
       columns=st.sampled_from([("a",), ("-a",), ("a", "b"), ("a", "-b"), ("-a", "b"),
                                ("-a", "-b"), ("-b",), ()]))
def test_a_page_token_resumes_exactly_after_its_row_whatever_the_nulls_and_directions(
        rows: list[tuple[int | None, int | None]], columns: tuple[str, ...]) -> None:
    table_rows = [{"id": i, "a": a, "b": b} for i, (a, b) in enumerate(rows)]
    keys = sort_keys(PAGED, order(*columns), "o")
    ordered = sorted(table_rows, key=postgres_order(keys))
    for position, last in enumerate(ordered):
        values = decode_token(encode_token(keys, last, "fp"), keys, "fp", "t")
        params = SqlParams()
        sql = after_sql(keys, values, params)
        # Every parameter bound is used: PostgreSQL cannot type one the text never mentions.
        assert sorted({int(n) for n in re.findall(r"\$(\d+)", sql)}) == \
            list(range(1, len(params.values) + 1)), sql
        assert [r["id"] for r in ordered if holds(sql, params.values, r)] == \
            [r["id"] for r in ordered[position + 1:]], sql
