"""batchd.kinds.conditions: nested AND / OR / NOT groups (``where``) as WHERE-clause text
(placeholders and catalog identifiers only) plus bound values, and every way a tree is
refused, naming its field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from google.protobuf import json_format

from batchd.errors import InvalidArgument
from batchd.kinds.base import Output
from batchd.kinds.conditions import MAX_DEPTH, MAX_NODES, has_where, plan_selection
from batchd.kinds.filters import Selection, fingerprint
from batchd.kinds.params import Deferred, Results, SqlParams
from batchd.v1 import batch_pb2
from batchd.values import Ref
from tests.unit.shop import shop_table

PATH = "operations[0].query"


def query(**fields: Any) -> batch_pb2.QueryOperation:
    return json_format.ParseDict({"table": "orders", **fields}, batch_pb2.QueryOperation())


def where_sql(tbl: str = "orders", results: Results | None = None,
              refs: list[Ref] | None = None, **fields: Any) -> tuple[str, list[Any]]:
    clauses = plan_selection(shop_table(tbl), query(**fields), PATH, [] if refs is None else refs)
    params = SqlParams()
    return Selection(clauses).sql(params, results or Results()), params.values


def invalid(tbl: str = "orders", **fields: Any) -> tuple[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        plan_selection(shop_table(tbl), query(**fields), PATH, [])
    [violation] = caught.value.violations
    return violation.field, violation.description


def f(column: str, op: str | None, value: Any = None) -> dict[str, Any]:
    """A filter; ``op`` by its short name (EQ for OPERATOR_EQ), or None for none."""
    return ({"column": column} | ({} if op is None else {"op": f"OPERATOR_{op}"})
            | ({} if value is None else {"value": value}))


def group(logic: str | None = None, *filters: dict[str, Any],
          groups: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    g: dict[str, Any] = {"filters": list(filters), "groups": groups or []}
    return g | ({"logic": f"LOGIC_{logic}"} if logic else {})


NEW = f("status", "EQ", "new")
BIG = f("total", "GE", "100")
NO_CUSTOMER = f("customer_id", "IS_NULL", True)


# --- the SQL built -----------------------------------------------------------------------------

def test_an_or_group_binds_each_value_in_order() -> None:
    assert where_sql(where=group("OR", NEW, BIG)) == (
        '("status" = $1::character varying OR "total" >= $2::numeric)', ["new", Decimal(100)])


@pytest.mark.parametrize("logic", [None, "AND"], ids=["unspecified", "and"])
def test_an_and_group_is_and_and_unspecified_means_and(logic: str | None) -> None:
    assert where_sql(where=group(logic, NEW, BIG)) == (
        '("status" = $1::character varying AND "total" >= $2::numeric)', ["new", Decimal(100)])


def test_not_negates_its_filter_or_its_group() -> None:
    assert where_sql(where=group("NOT", NO_CUSTOMER)) == ('(NOT ("customer_id" IS NULL))', [])
    assert where_sql(where=group("NOT", groups=[group("OR", NEW, BIG)])) == (
        '(NOT (("status" = $1::character varying OR "total" >= $2::numeric)))',
        ["new", Decimal(100)])


def test_nested_a_and_b_or_not_c_with_filters_anded_before_it() -> None:
    assert where_sql(filters=[f("id", "GT", 7)], where=group(
        None, NEW, groups=[group("OR", BIG, groups=[group("NOT", NO_CUSTOMER)])])) == (
        '"id" > $1::bigint AND ("status" = $2::character varying AND '
        '("total" >= $3::numeric OR (NOT ("customer_id" IS NULL))))', [7, "new", Decimal(100)])


def test_a_where_beside_soft_delete_and_every_group_is_parenthesised() -> None:
    customers = shop_table("customers")
    clauses = plan_selection(customers, query(table="customers", where=group(
        "OR", f("name", "EQ", "a"), f("email", "ILIKE", "%@X"))), PATH, [])
    params = SqlParams()
    sql = Selection(clauses, soft_delete=customers.columns["deleted_at"]).sql(params, Results())
    assert sql == '("name" = $1::text OR "email" ILIKE $2::text) AND "deleted_at" IS NULL'
    assert params.values == ["a", "%@X"]


@pytest.mark.parametrize("where", [{}, {"logic": "LOGIC_AND"}, None], ids=["empty", "empty and",
                                                                            "absent"])
def test_an_empty_and_where_is_no_condition(where: dict[str, Any] | None) -> None:
    fields = {} if where is None else {"where": where}
    assert not has_where(query(**fields))
    assert where_sql(**fields) == ("TRUE", [])


def test_identifiers_in_groups_are_quoted_from_the_catalog_and_values_only_parameters() -> None:
    hostile = "x'); DROP TABLE customers; --"
    sql, values = where_sql('Odd "Name"', where=group("NOT", groups=[group(
        "OR", f('we"ird', "EQ", hostile), f('we"ird', "ILIKE", "%' OR 1=1 --"))]))
    assert sql == '(NOT (("we""ird" = $1::text OR "we""ird" ILIKE $2::text)))'
    assert values == [hostile, "%' OR 1=1 --"]


def test_references_inside_nested_groups_are_collected_and_resolved_at_run_time() -> None:
    refs: list[Ref] = []
    clauses = plan_selection(shop_table("orders"), query(where=group("OR", NEW, groups=[
        group("NOT", f("customer_id", "IN", [1, {"$ref": "c.1.id"}])),
        group(None, f("id", "EQ", {"$ref": "o.id"}))])), PATH, refs)
    assert refs == [Ref("c", 1, "id"), Ref("o", 0, "id")]
    deferred = clauses[0].children[1].children[0].value  # type: ignore[attr-defined]
    assert isinstance(deferred, Deferred)
    assert deferred.path == f"{PATH}.where.groups[0].filters[0].value"
    results = Results()
    results.record("c", Output([{"id": 1}, {"id": 2**62}]))
    results.record("o", Output([{"id": 9}]))
    params = SqlParams()
    assert Selection(clauses).sql(params, results) == (
        '("status" = $1::character varying OR (NOT ("customer_id" = ANY($2::bigint[]))) OR '
        '("id" = $3::bigint))')
    assert params.values == ["new", [1, 2**62], 9]


def chain(depth: int) -> dict[str, Any]:
    """``depth`` groups, each the only group of the one above, the innermost with a filter."""
    g = group("OR", NEW)
    for _ in range(depth - 1):
        g = group(None, groups=[g])
    return g


def test_groups_may_nest_max_depth_deep_and_hold_max_nodes() -> None:
    sql, _ = where_sql(where=chain(MAX_DEPTH))
    assert sql.count("(") == MAX_DEPTH
    many = group("OR", *[f("id", "EQ", i) for i in range(MAX_NODES)])
    assert len(where_sql(where=many)[1]) == MAX_NODES


# --- refused, naming the field -------------------------------------------------------------

@pytest.mark.parametrize(("where", "field", "description"), [
    (group("NOT", NEW, BIG), "where", "LOGIC_NOT takes exactly one filter or group, got 2"),
    (group(None, groups=[group("NOT", NEW, groups=[group("OR", BIG)])]), "where.groups[0]",
     "LOGIC_NOT takes exactly one filter or group, got 2"),
    (group("NOT"), "where", "LOGIC_NOT takes exactly one filter or group, got 0"),
    (group("OR"), "where", "LOGIC_OR needs at least one filter or group"),
    (group("OR", NEW, groups=[group("AND")]), "where.groups[0]",
     "LOGIC_AND needs at least one filter or group"),
    (group("OR", NEW, groups=[group(None, BIG), {}]), "where.groups[1]",
     "LOGIC_UNSPECIFIED needs at least one filter or group"),
    ({"logic": 9, "filters": [NEW]}, "where.logic",
     "unknown logic 9 (use LOGIC_AND, LOGIC_OR or LOGIC_NOT)"),
    (chain(MAX_DEPTH + 1), "where" + ".groups[0]" * MAX_DEPTH,
     f"groups nest at most {MAX_DEPTH} deep"),
    (group("OR", *[NEW] * (MAX_NODES + 1)), "where",
     f"too many conditions: a where holds at most {MAX_NODES} filters and groups in all"),
    (group("OR", *[NEW] * 60, groups=[group(None, *[BIG] * 40)]), "where.groups[0]",
     f"too many conditions: a where holds at most {MAX_NODES} filters and groups in all"),
], ids=["not of two", "nested not of two", "not of none", "empty or", "empty nested and",
        "empty nested unspecified", "unknown logic", "too deep", "too many", "too many nested"])
def test_a_malformed_tree_is_refused_naming_the_group(where: dict[str, Any], field: str,
                                                      description: str) -> None:
    assert invalid(where=where) == (f"{PATH}.{field}", description)


@pytest.mark.parametrize(("bad", "field", "description"), [
    (f("nope", "EQ", 1), "column", 'table "public.orders" has no column "nope"'),
    (f("total", "LT", "ten"), "value", None),
    (f("total", "ILIKE", "1%"), "op", "ILIKE works on text columns only"),
    ({"column": "id", "value": 1}, "op", None),
], ids=["unknown column", "bad value", "ilike on numeric", "no operator"])
def test_a_bad_filter_inside_a_group_names_its_path(bad: dict[str, Any], field: str,
                                                    description: str | None) -> None:
    got_field, got = invalid(where=group(None, NEW, groups=[group("OR", BIG),
                                                            group("NOT", bad)]))
    assert got_field == f"{PATH}.where.groups[1].filters[0].{field}"
    assert description is None or got == description


def test_a_huge_flat_where_is_refused_before_its_filters_are_planned() -> None:
    # A million filters naming no column: refused for their number, not their columns.
    where = batch_pb2.FilterGroup(filters=[batch_pb2.Filter()] * 1_000_000)
    message = batch_pb2.QueryOperation(table="orders", where=where)
    with pytest.raises(InvalidArgument, match="too many conditions"):
        plan_selection(shop_table("orders"), message, PATH, [])


# --- page tokens ---------------------------------------------------------------------------

def test_a_query_fingerprint_includes_where_and_ignores_count() -> None:
    base = query(where=group("OR", NEW, BIG))
    assert fingerprint(base) == fingerprint(query(where=group("OR", NEW, BIG), count=True))
    assert fingerprint(base) != fingerprint(query(where=group(None, NEW, BIG)))
    assert fingerprint(base) != fingerprint(query(where=group("OR", NEW, f("total", "GE", "99"))))
    assert fingerprint(base) != fingerprint(query(filters=[NEW, BIG]))
