"""batchd.batch.coalesce.runs: which consecutive steps of an atomic batch share one statement
(plain inserts into the same table, columns and RETURNING, none referring to another member)."""

from __future__ import annotations

from typing import Any

from batchd.batch.coalesce import runs
from tests.unit.shop import call, get, insert, plan, ref

ADA = {"name": "Ada", "email": "ada@x"}


def grouped(*operations: dict[str, Any], invalid: tuple[str, ...] = ()) -> list[list[str]]:
    """The runs, by operation id; every operation but ``invalid`` is planned."""
    batch_plan = plan(list(operations))
    assert tuple(s.id for s in batch_plan.invalid) == invalid
    return [[s.id for s in group] for group in runs(batch_plan.steps)]


def test_consecutive_plain_inserts_into_one_table_share_a_statement() -> None:
    assert grouped(insert("a", "customers", ADA), insert("b", "customers", ADA, ADA),
                   insert("c", "customers", ADA)) == [["a", "b", "c"]]


def test_inserts_naming_other_columns_do_not_share() -> None:
    assert grouped(insert("a", "customers", ADA),
                   insert("b", "customers", {"name": "Bob", "email": "b@x", "version": 1})) == \
        [["a"], ["b"]]


def test_inserts_into_other_tables_do_not_share() -> None:
    assert grouped(insert("a", "billing.invoices", {"id": 1}),
                   insert("b", "public.orders", {"id": 1}),
                   insert("c", "orders", {"id": 2})) == [["a"], ["b", "c"]]


def test_inserts_returning_other_columns_do_not_share() -> None:
    assert grouped(insert("a", "customers", ADA), insert("b", "customers", ADA,
                                                         returning=["id", "email"]),
                   insert("c", "customers", ADA, returning=["id", "email"])) == \
        [["a"], ["b", "c"]]


def test_inserts_with_on_conflict_never_share() -> None:
    conflict = {"onConflict": {"action": "ACTION_DO_NOTHING"}}
    upsert = {"onConflict": {"action": "ACTION_UPDATE"}}
    assert grouped(insert("a", "customers", ADA, **conflict),
                   insert("b", "customers", ADA, **conflict),
                   insert("c", "customers", ADA, **upsert),
                   insert("d", "customers", ADA, **upsert)) == [["a"], ["b"], ["c"], ["d"]]


def test_inserts_with_array_columns_never_share() -> None:
    row = {**ADA, "tags": ["x"]}
    assert grouped(insert("a", "customers", row), insert("b", "customers", row)) == \
        [["a"], ["b"]]


def test_inserts_returning_nothing_never_share() -> None:
    assert grouped(insert("a", "events", {"payload": 1}), insert("b", "events",
                                                                {"payload": 2})) == \
        [["a"], ["b"]]


def test_an_insert_referring_to_a_member_of_the_run_starts_a_new_run() -> None:
    assert grouped(insert("a", "orders", {"customer_id": 1}),
                   insert("b", "orders", {"customer_id": ref("a.id")}),
                   insert("c", "orders", {"customer_id": 3})) == [["a"], ["b", "c"]]


def test_an_explicit_dependency_on_a_member_starts_a_new_run_too() -> None:
    assert grouped(insert("a", "customers", ADA),
                   {**insert("b", "customers", ADA), "dependsOn": ["a"]}) == [["a"], ["b"]]


def test_references_to_operations_before_the_run_keep_it_together() -> None:
    assert grouped(call("c"),
                   insert("a", "orders", {"customer_id": ref("c.id")}),
                   insert("b", "orders", {"customer_id": ref("c.1.id")})) == \
        [["c"], ["a", "b"]]


def test_other_kinds_run_alone_and_end_a_run() -> None:
    assert grouped(insert("a", "customers", ADA), get("g", "customers", {"id": 1}),
                   get("h", "customers", {"id": 2}), insert("b", "customers", ADA),
                   call("x"), call("y")) == [["a"], ["g"], ["h"], ["b"], ["x"], ["y"]]


def test_an_invalid_step_runs_alone_and_ends_a_run() -> None:
    assert grouped(insert("a", "customers", ADA), insert("bad", "customers", {"name": 1}),
                   insert("b", "customers", ADA), insert("c", "customers", ADA),
                   invalid=("bad",)) == [["a"], ["bad"], ["b", "c"]]


def test_runs_keep_every_step_once_in_request_order() -> None:
    steps = plan([insert("a", "customers", ADA), get("g", "customers", {"id": 1}),
                  insert("b", "orders", {"id": 1}), insert("c", "orders", {"id": 2}),
                  insert("d", "orders", {"customer_id": ref("c.id")})]).steps
    assert [s for group in runs(steps) for s in group] == steps
