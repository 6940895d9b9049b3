"""Richer queries on a real server: nested where groups (AND / OR / NOT), ILIKE, the exact
count beside a page, keyset pages through OR groups, references inside groups, updates and
deletes by where, and every refusal naming its field."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from batchd.kinds.conditions import MAX_DEPTH, MAX_NODES
from batchd.v1 import batch_pb2
from tests.support.batches import SUCCEEDED, batch, fails, rows

EVENTS = [(1, "click", 5), (2, "View", None), (3, "CLICK", 1), (4, "buy", 9), (5, "view", 5),
          (6, "Click", None), (7, "buy", 2), (8, "BUY", 7)]


async def seed_events(db) -> None:
    await db.executemany("INSERT INTO events (id, kind, score) VALUES ($1, $2, $3)", EVENTS)


async def one(stub, op: dict, **fields) -> batch_pb2.OperationResult:
    response = await stub.BatchExecute(batch([{"id": "op", **op}], **fields))
    return response.results[0]


def f(column: str, op: str, value: Any = None) -> dict[str, Any]:
    """A filter; ``op`` by its short name (EQ for OPERATOR_EQ)."""
    return {"column": column, "op": f"OPERATOR_{op}"} | ({} if value is None else {"value": value})


def group(logic: str | None, *filters: dict[str, Any],
          groups: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    g: dict[str, Any] = {"filters": list(filters), "groups": groups or []}
    return g | ({"logic": f"LOGIC_{logic}"} if logic else {})


async def ids(stub, **query: Any) -> list[int]:
    result = await one(stub, {"query": {"table": "events", "columns": ["id"], **query}})
    return [int(r["id"]) for r in rows(result)]


# --- conditions ------------------------------------------------------------------------------

async def test_an_or_of_two_conditions(stub, db):
    await seed_events(db)
    assert await ids(stub, where=group("OR", f("kind", "EQ", "buy"),
                                       f("score", "IS_NULL", True))) == [2, 4, 6, 7]


async def test_not_follows_sql_so_null_scores_match_neither_a_comparison_nor_its_negation(
        stub, db):
    await seed_events(db)
    assert await ids(stub, where=group("NOT", f("score", "GE", 5))) == [3, 7]
    assert await ids(stub, where=group("NOT", groups=[group(
        "OR", f("score", "GE", 5), f("score", "IS_NULL", True))])) == [3, 7]


async def test_nested_a_and_b_or_not_c(stub, db):
    await seed_events(db)
    # kind ILIKE 'c%' AND (score IS NULL OR NOT score >= 2): 3 (score 1) and 6 (NULL).
    assert await ids(stub, where=group(None, f("kind", "ILIKE", "c%"), groups=[group(
        "OR", f("score", "IS_NULL", True), groups=[group("NOT", f("score", "GE", 2))])])) == \
        [3, 6]


async def test_where_is_anded_with_filters(stub, db):
    await seed_events(db)
    assert await ids(stub, filters=[f("score", "GE", 5)], where=group(
        "OR", f("kind", "ILIKE", "buy"), f("kind", "EQ", "view"))) == [4, 5, 8]


async def test_ilike_ignores_case_and_like_does_not(stub, db):
    await seed_events(db)
    assert await ids(stub, filters=[f("kind", "ILIKE", "click")]) == [1, 3, 6]
    assert await ids(stub, filters=[f("kind", "LIKE", "click")]) == [1]
    assert await ids(stub, filters=[f("kind", "ILIKE", "_I%")]) == [2, 5]


# --- count -----------------------------------------------------------------------------------

BUY_OR_NULL = group("OR", f("kind", "ILIKE", "buy"), f("score", "IS_NULL", True))  # 2 4 6 7 8


async def test_count_is_every_matching_row_beside_a_smaller_page_and_on_every_page(stub, db):
    await seed_events(db)
    query = {"table": "events", "where": BUY_OR_NULL, "columns": ["id"], "limit": 2,
             "count": True}
    first = await one(stub, {"query": query})
    assert [r["id"] for r in rows(first)] == ["2", "4"] and first.total_count == 5
    assert first.HasField("total_count") and first.next_page_token
    second = await one(stub, {"query": query | {"page_token": first.next_page_token}})
    assert [r["id"] for r in rows(second)] == ["6", "7"] and second.total_count == 5
    # The token works without count too (count selects no other rows); no count, no field.
    uncounted = await one(stub, {"query": query | {"page_token": first.next_page_token,
                                                   "count": False}})
    assert rows(uncounted) == rows(second) and not uncounted.HasField("total_count")
    assert uncounted.next_page_token == second.next_page_token


async def test_count_of_nothing_is_zero_and_present(stub, db):
    await seed_events(db)
    result = await one(stub, {"query": {"table": "events", "count": True,
                                        "filters": [f("kind", "EQ", "none")]}})
    assert not result.rows and result.HasField("total_count") and result.total_count == 0
    assert not result.next_page_token


async def test_count_beside_an_empty_page_after_a_token(stub, db):
    await seed_events(db)
    query = {"table": "events", "columns": ["id"], "limit": 3, "count": True,
             "order_by": [{"column": "id", "descending": True}]}
    first = await one(stub, {"query": query})
    assert [r["id"] for r in rows(first)] == ["8", "7", "6"] and first.total_count == 8
    await db.execute("DELETE FROM events WHERE id < 6")
    after = await one(stub, {"query": query | {"page_token": first.next_page_token}})
    assert not after.rows and after.rows_affected == 0 and after.total_count == 3
    assert not after.next_page_token


async def seed_orders(db) -> None:
    await db.execute("INSERT INTO customers (id, name, email) VALUES (1, 'Ada', 'ada@x')")
    await db.executemany("INSERT INTO orders (id, customer_id, status, total) "
                         "VALUES ($1, 1, $2, $3)",
                         [(1, "new", 10), (2, "paid", 20), (3, "NEW", 30), (4, "paid", 40),
                          (5, "shipped", 50)])


async def test_count_leaves_out_soft_deleted_rows_unless_include_deleted(stub, db):
    await seed_orders(db)
    await db.execute("UPDATE orders SET deleted_at = now() WHERE id IN (2, 3)")
    where = group("OR", f("status", "ILIKE", "new"), f("status", "EQ", "paid"))
    query = {"table": "orders", "where": where, "columns": ["id"], "count": True, "limit": 1}
    visible = await one(stub, {"query": query})
    assert [r["id"] for r in rows(visible)] == ["1"] and visible.total_count == 2
    every = await one(stub, {"query": query | {"include_deleted": True}})
    assert [r["id"] for r in rows(every)] == ["1"] and every.total_count == 4


async def test_a_counted_page_has_exactly_the_values_of_an_uncounted_one(stub, db):
    await db.execute(
        "INSERT INTO all_types VALUES (1, 1, 2, 9007199254740993, 1.5, 12.34, 0.1, true, 'x', "
        "'c', '11111111-1111-1111-1111-111111111111', '2024-02-29', "
        "'2024-01-01 12:00:00.123456+02', 'infinity', '{\"a\": [1, 2.5]}', '{\"b\": null}', "
        "'\\x00ff', '{1,NULL,9007199254740993}', '{a,NULL}', '{{1,2},{3,4}}', "
        "'1 year 2 days 00:00:01.5'), (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
        "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), "
        "(3, NULL, NULL, NULL, 'NaN', NULL, 'Infinity', NULL, NULL, NULL, NULL, '-infinity', "
        "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)")
    query = {"table": "all_types", "limit": 2, "order_by": [{"column": "num"}]}
    plain = await one(stub, {"query": query})
    counted = await one(stub, {"query": query | {"count": True}})
    assert rows(counted) == rows(plain) and len(rows(plain)) == 2
    assert counted.next_page_token == plain.next_page_token and counted.total_count == 3


# --- keyset pages --------------------------------------------------------------------------

@pytest.mark.parametrize("order_by", [[], [{"column": "score", "descending": True}],
                                      [{"column": "kind"}, {"column": "score"}]],
                         ids=["key", "score desc", "kind, score"])
@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_pages_through_an_or_query_return_every_matching_row_exactly_once(
        stub, db, order_by, limit):
    await seed_events(db)
    where = group("OR", f("kind", "ILIKE", "buy"), groups=[group(
        "NOT", groups=[group("OR", f("score", "IS_NULL", False), f("kind", "EQ", "View"))])])
    query = {"table": "events", "where": where, "order_by": order_by, "columns": ["id"]}
    whole = [int(r["id"]) for r in rows(await one(stub, {"query": query}))]
    assert sorted(whole) == [4, 6, 7, 8]
    seen, token = [], ""
    while True:
        page = await one(stub, {"query": query | {"limit": limit, "page_token": token,
                                                  "count": True}})
        assert page.total_count == 4
        seen += [int(r["id"]) for r in rows(page)]
        token = page.next_page_token
        if not token:
            break
    assert seen == whole


async def test_a_page_token_of_another_where_is_refused(stub, db):
    await seed_events(db)
    first = await one(stub, {"query": {"table": "events", "limit": 1, "where": BUY_OR_NULL}})
    other = group("OR", f("kind", "ILIKE", "buy"), f("score", "IS_NULL", False))
    failure = await fails(stub, batch([{"id": "q", "query": {
        "table": "events", "limit": 1, "where": other, "page_token": first.next_page_token}}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.violations == [("operations[0].query.page_token",
                                   "the page token belongs to a different query")]


# --- references, update and delete --------------------------------------------------------

@pytest.mark.parametrize("mode", ["MODE_ATOMIC", "MODE_INDEPENDENT"])
async def test_a_reference_inside_a_nested_group_orders_the_operations(stub, db, mode):
    await seed_events(db)
    made = {"id": "made", "insert": {"table": "events", "rows": [
        {"id": 100, "kind": "ref"}]}}
    found = {"id": "found", "query": {"table": "events", "columns": ["id"], "count": True,
                                      "where": group("OR", f("kind", "EQ", "buy"), groups=[
                                          group("NOT", f("id", "NE", {"$ref": "made.id"}))])}}
    # INDEPENDENT: listed first, it still runs after the insert it refers to.
    operations = [made, found] if mode == "MODE_ATOMIC" else [found, made]
    response = await stub.BatchExecute(batch(operations, mode=mode))
    [result] = [r for r in response.results if r.id == "found"]
    assert result.outcome == SUCCEEDED
    assert [r["id"] for r in rows(result)] == ["4", "7", "100"] and result.total_count == 3


async def test_update_and_delete_by_where(stub, db):
    await seed_orders(db)
    paid_or_new = group("OR", f("status", "ILIKE", "new"), f("status", "EQ", "paid"))
    updated = await one(stub, {"update": {"table": "orders", "where": group(
        None, f("total", "GE", 20), groups=[paid_or_new]), "set": {"status": "held"},
        "returning": ["id", "version"]}})
    assert rows(updated) == [{"id": "2", "version": 2.0}, {"id": "3", "version": 2.0},
                             {"id": "4", "version": 2.0}]
    deleted = await one(stub, {"delete": {"table": "orders", "filters": [f("total", "LT", 50)],
                                          "where": group("NOT", f("status", "EQ", "held"))}})
    assert rows(deleted) == [{"id": "1"}]
    assert await db.fetchval("SELECT array_agg(id ORDER BY id) FROM orders "
                             "WHERE deleted_at IS NULL") == [2, 3, 4, 5]


# --- refused ---------------------------------------------------------------------------------

def chain(depth: int) -> dict[str, Any]:
    g = group("OR", f("id", "EQ", 1))
    for _ in range(depth - 1):
        g = group(None, groups=[g])
    return g


@pytest.mark.parametrize(("kind", "where", "field", "needle"), [
    ("query", group("NOT", f("id", "EQ", 1), f("id", "EQ", 2)), "where",
     "LOGIC_NOT takes exactly one filter or group, got 2"),
    ("query", chain(MAX_DEPTH + 1), "where" + ".groups[0]" * MAX_DEPTH,
     f"groups nest at most {MAX_DEPTH} deep"),
    ("query", group("OR", *[f("id", "EQ", i) for i in range(MAX_NODES + 1)]), "where",
     "too many conditions"),
    ("query", group(None, f("id", "EQ", 1), groups=[group("OR", f("kind", "EQ", "a")),
                                                     group("NOT", f("nope", "EQ", 1))]),
     "where.groups[1].filters[0].column", 'table "public.events" has no column "nope"'),
    ("query", group("OR", f("id", "EQ", 1), groups=[group(None, f("score", "GT", "many"))]),
     "where.groups[0].filters[0].value", "score"),
    ("query", group("OR"), "where", "LOGIC_OR needs at least one filter or group"),
    ("update", group("OR", f("id", "EQ", 1), groups=[{}]), "where.groups[0]",
     "needs at least one filter or group"),
    ("delete", group("NOT", groups=[group("OR", f("id", "ILIKE", "1%"))]),
     "where.groups[0].filters[0].op", "ILIKE works on text columns only"),
], ids=["not of two", "too deep", "too many", "unknown column", "bad value", "empty or",
        "empty group in an update", "ilike on a number in a delete"])
async def test_a_bad_where_is_invalid_argument_naming_the_field(stub, db, kind, where, field,
                                                               needle):
    await seed_events(db)
    operation: dict[str, Any] = {"table": "events", "where": where}
    if kind == "update":
        operation["set"] = {"kind": "x"}
    failure = await fails(stub, batch([{"id": "x", kind: operation}]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    [(got_field, description)] = failure.violations
    assert got_field == f"operations[0].{kind}.{field}" and needle in description
    assert [r[0] for r in await db.fetch("SELECT kind FROM events ORDER BY id")] == \
        [kind for _, kind, _ in EVENTS]


async def test_a_page_ending_on_a_null_in_a_later_ascending_key_resumes(stub, db):
    # Regression: the keyset condition bound kind's value for the (skipped) "after NULL"
    # alternative without using it, and PostgreSQL refused the untyped parameter.
    await db.execute("INSERT INTO events (id, kind, score) VALUES (1, 'a', 1), (2, 'a', NULL), "
                     "(3, 'b', 1)")
    query = {"table": "events", "columns": ["id"],
             "order_by": [{"column": "kind"}, {"column": "score"}]}
    first = await one(stub, {"query": query | {"limit": 2}})
    assert [r["id"] for r in rows(first)] == ["1", "2"]  # 2: score NULL
    assert await ids(stub, **query | {"page_token": first.next_page_token}) == [3]
