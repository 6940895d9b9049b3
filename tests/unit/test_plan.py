"""batchd.batch.plan: a request validated whole before anything runs — limits, operation ids,
references and dependencies, cycles, per-operation errors and scopes."""

from __future__ import annotations

import grpc
import pytest

from batchd.batch.plan import BatchPlan, plan_batch, unit_order
from batchd.errors import InvalidArgument, PermissionDenied
from batchd.kinds.base import PlanContext
from batchd.values import Ref
from tests.unit.shop import (
    CATALOG,
    CTX,
    SETTINGS,
    call,
    delete,
    get,
    insert,
    plan,
    principal,
    query,
    ref,
    request,
    step,
    update,
)

ADA = {"name": "Ada", "email": "ada@x"}


def refused(operations: list, **fields: object) -> InvalidArgument:
    """The InvalidArgument that refuses the whole request."""
    with pytest.raises(InvalidArgument) as caught:
        plan(operations, **fields)
    return caught.value


def ids_in_order(p: BatchPlan) -> list[str]:
    """The operation ids of an INDEPENDENT plan in the order its units may run one by one."""
    return [s.id for u in unit_order(p.units) for s in u.steps]


def only_violation(error: InvalidArgument) -> tuple[str, str]:
    [violation] = error.violations
    return violation.field, violation.description


# --- the request as a whole ------------------------------------------------------------------

def test_a_batch_without_operations_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        plan_batch(request([]), CTX, None)
    assert only_violation(caught.value) == ("operations", "at least one operation is required")


def test_more_operations_than_max_operations_is_invalid() -> None:
    ops = [get(f"g{i}", "customers", {"id": i}) for i in range(SETTINGS.max_operations + 1)]
    err = refused(ops)
    assert err.violations[0].field == "operations"
    assert f"exceed the limit of {SETTINGS.max_operations}" in err.message


def test_max_operations_itself_is_allowed() -> None:
    ops = [get(f"g{i}", "customers", {"id": i}) for i in range(SETTINGS.max_operations)]
    assert not plan(ops).invalid


def test_rows_to_insert_are_counted_across_the_whole_batch() -> None:
    half = SETTINGS.max_rows_per_batch // 2 + 1
    rows = [ADA] * half
    err = refused([insert("a", "customers", *rows), insert("b", "customers", *rows)])
    assert f"{2 * half} rows to insert exceed the limit" in err.message


@pytest.mark.parametrize(("fields", "path"), [({"mode": 7}, "mode"), ({"isolation": 9},
                                                                        "isolation")])
def test_unknown_enum_numbers_are_invalid(fields: dict, path: str) -> None:
    assert refused([get("g", "customers", {"id": 1})], **fields).violations[0].field == path


@pytest.mark.parametrize(("mode", "atomic"), [(None, True), ("MODE_ATOMIC", True),
                                              ("MODE_INDEPENDENT", False)])
def test_a_batch_is_atomic_unless_independent(mode: str | None, atomic: bool) -> None:
    fields = {"mode": mode} if mode else {}
    assert plan([get("g", "customers", {"id": 1})], **fields).atomic is atomic


@pytest.mark.parametrize(("isolation", "name"), [
    ("ISOLATION_LEVEL_UNSPECIFIED", None),
    ("ISOLATION_LEVEL_READ_COMMITTED", "read_committed"),
    ("ISOLATION_LEVEL_REPEATABLE_READ", "repeatable_read"),
    ("ISOLATION_LEVEL_SERIALIZABLE", "serializable"),
])
def test_isolation_level_becomes_the_transaction_isolation(isolation: str,
                                                           name: str | None) -> None:
    assert plan([get("g", "customers", {"id": 1})], isolation=isolation).isolation == name


def test_validate_only_and_read_only_reach_the_plan() -> None:
    p = plan([get("g", "customers", {"id": 1})], validateOnly=True, readOnly=True)
    assert (p.validate_only, p.read_only) == (True, True)


@pytest.mark.parametrize("op_id", ["", "has space", "dot.ted", "é", "x" * 65, "a/b"])
def test_malformed_operation_id_is_invalid(op_id: str) -> None:
    err = refused([get("ok", "customers", {"id": 1}), get(op_id, "customers", {"id": 2})])
    assert only_violation(err) == ("operations[1].id",
                                   "must be 1-64 characters of A-Z a-z 0-9 _ -")


@pytest.mark.parametrize("op_id", ["a", "A-z_09", "x" * 64])
def test_well_formed_operation_ids_are_accepted(op_id: str) -> None:
    assert [s.id for s in plan([get(op_id, "customers", {"id": 1})]).steps] == [op_id]


def test_duplicate_operation_id_names_both_positions() -> None:
    err = refused([get("a", "customers", {"id": 1}), get("b", "customers", {"id": 1}),
                   get("a", "customers", {"id": 2})])
    assert only_violation(err) == ("operations[2].id", '"a" is not unique (also operations[0])')


def test_malformed_request_id_is_invalid() -> None:
    err = refused([get("g", "customers", {"id": 1})], requestId="no spaces allowed")
    assert err.violations[0].field == "request_id"


def test_a_request_id_is_claimed_for_the_principal() -> None:
    p = plan([get("g", "customers", {"id": 1})], principal("admin"), requestId="r-1")
    assert p.claim is not None
    assert (p.claim.request_id, p.claim.principal) == ("r-1", "tester")


def test_validate_only_claims_no_request_id() -> None:
    assert plan([get("g", "customers", {"id": 1})], requestId="r-1",
                validateOnly=True).claim is None


def test_a_request_without_id_claims_nothing() -> None:
    assert plan([get("g", "customers", {"id": 1})]).claim is None


# --- invalid operations are steps, not request errors ----------------------------------------

def test_unknown_table_fails_only_its_step_naming_the_field() -> None:
    p = plan([insert("a", "customers", ADA), insert("b", "nope", ADA)])
    assert [s.id for s in p.invalid] == ["b"]
    err = step(p, "b").error
    assert isinstance(err, InvalidArgument) and step(p, "b").planned is None
    assert only_violation(err) == ("operations[1].insert.table", 'unknown or not exposed table '
                                                                 '"nope"')
    assert err.operation_id == "b" and err.full_message.startswith('operation "b": ')
    assert step(p, "a").planned is not None and step(p, "a").error is None


def test_every_invalid_operation_is_reported_not_only_the_first() -> None:
    p = plan([insert("a", "nope", ADA), get("b", "customers", {"id": 1}),
              get("c", "customers", {"id": "one"}), {"id": "d"}])
    assert [s.id for s in p.invalid] == ["a", "c", "d"]


def test_an_operation_without_a_kind_is_an_invalid_step() -> None:
    err = step(plan([{"id": "d"}]), "d").error
    assert err is not None and err.violations[0].field == "operations[0]"
    assert "insert, get, query, update, delete, call" in err.message


def test_a_value_that_does_not_fit_names_the_row_and_column() -> None:
    p = plan([insert("a", "customers", ADA, {"name": "Bob", "email": 5})])
    field, description = only_violation(step(p, "a").error)
    assert field == "operations[0].insert.rows[1].email"
    assert "text" in description


def test_rows_of_an_insert_must_name_the_same_columns() -> None:
    p = plan([insert("a", "customers", ADA, {"name": "Bob"})])
    assert step(p, "a").error.violations[0].field == "operations[0].insert.rows[1]"


def test_an_insert_is_allowed_on_a_table_without_primary_key_but_a_query_is_not() -> None:
    p = plan([insert("a", "events", {"payload": {"x": 1}}), query("q", "events")])
    assert step(p, "a").error is None
    assert 'operation "query" is not allowed on table "public.events"' in \
        step(p, "q").error.message


def test_operations_narrowed_by_table_settings_are_not_allowed() -> None:
    p = plan([get("g", "readonly_things", {"id": 1}), delete("d", "readonly_things",
                                                              key={"id": 1})])
    assert step(p, "g").error is None
    assert only_violation(step(p, "d").error) == (
        "operations[1].delete",
        'operation "delete" is not allowed on table "public.readonly_things"')


def test_a_generated_column_cannot_be_written() -> None:
    p = plan([insert("a", "orders", {"total_cents": 1}),
              update("u", "orders", {"total_cents": 1}, key={"id": 1})])
    assert step(p, "a").error.violations[0].field == "operations[0].insert.rows[0].total_cents"
    assert step(p, "u").error.violations[0].field == "operations[1].update.set.total_cents"


def test_the_version_column_cannot_be_set() -> None:
    p = plan([update("u", "orders", {"version": 3}, key={"id": 1})])
    assert "use expected_version" in step(p, "u").error.message


def test_expected_version_needs_a_version_column_and_a_key() -> None:
    p = plan([update("a", "order_items", {"qty": 1}, key={"order_id": 1, "line": 1},
                     expectedVersion="1"),
              update("b", "orders", {"status": "x"}, filters=[{"column": "id", "op": "OPERATOR_EQ",
                                                               "value": 1}],
                     expectedVersion="1"),
              update("c", "orders", {"status": "x"}, key={"id": 1}, expectedVersion="1")])
    assert "has no version column" in step(p, "a").error.message
    assert "needs a key, not filters" in step(p, "b").error.message
    assert step(p, "c").error is None and step(p, "c").planned.spec.expected_version == 1


@pytest.mark.parametrize("selection", [
    {}, {"key": {"id": 1}, "filters": [{"column": "id", "op": "OPERATOR_EQ", "value": 1}]},
    {"key": {"id": 1}, "where": {"filters": [{"column": "id", "op": "OPERATOR_EQ", "value": 1}]}},
    {"where": {}}, {"where": {"logic": "LOGIC_AND"}},
], ids=["neither", "both", "key and where", "empty where", "empty and where"])
def test_update_and_delete_need_exactly_one_of_key_and_filters(selection: dict) -> None:
    p = plan([update("u", "orders", {"status": "x"}, **selection), delete("d", "orders",
                                                                         **selection)])
    for op_id in ("u", "d"):
        assert "give exactly one of key and filters" in step(p, op_id).error.message


def test_update_and_delete_by_where_alone_or_beside_filters() -> None:
    where = {"logic": "LOGIC_OR",
             "filters": [{"column": "status", "op": "OPERATOR_EQ", "value": "a"},
                         {"column": "status", "op": "OPERATOR_ILIKE", "value": "b%"}]}
    eq_one = [{"column": "id", "op": "OPERATOR_EQ", "value": 1}]
    p = plan([update("u", "orders", {"status": "x"}, where=where),
              delete("d", "orders", where=where, filters=eq_one)])
    assert not p.invalid
    assert len(step(p, "u").planned.spec.selection.conditions) == 1
    assert len(step(p, "d").planned.spec.selection.conditions) == 2


def test_a_bad_where_of_an_update_or_delete_names_its_field() -> None:
    bad = {"groups": [{"logic": "LOGIC_NOT", "filters": [
        {"column": "status", "op": "OPERATOR_EQ", "value": "a"},
        {"column": "id", "op": "OPERATOR_EQ", "value": 1}]}]}
    p = plan([update("u", "orders", {"status": "x"}, where=bad), delete("d", "orders", where=bad)])
    for op_id, index, kind in (("u", 0, "update"), ("d", 1, "delete")):
        [violation] = step(p, op_id).error.violations
        assert violation.field == f"operations[{index}].{kind}.where.groups[0]"


def test_an_update_must_set_something() -> None:
    assert "at least one column to set" in \
        step(plan([update("u", "orders", {}, key={"id": 1})]), "u").error.message


@pytest.mark.parametrize(("key", "field", "message"), [
    ({"order_id": 1}, "operations[0].get.key", "missing primary key column(s) ['line']"),
    ({"order_id": 1, "line": 2, "qty": 3}, "operations[0].get.key", "['qty'] not in the primary"),
    ({"order_id": 1, "line": None}, "operations[0].get.key.line", "cannot be null"),
])
def test_a_key_is_the_whole_primary_key_and_nothing_else(key: dict, field: str,
                                                         message: str) -> None:
    err = step(plan([get("g", "order_items", key)]), "g").error
    assert err.violations[0].field == field and message in err.message


def test_a_query_limit_beyond_max_page_size_is_invalid() -> None:
    p = plan([query("q", "orders", limit=SETTINGS.max_page_size + 1),
              query("r", "orders", limit=SETTINGS.max_page_size), query("s", "orders")])
    assert step(p, "q").error.violations[0].field == "operations[0].query.limit"
    assert step(p, "r").planned.spec.limit == SETTINGS.max_page_size
    assert step(p, "s").planned.spec.limit == 100  # the default page


@pytest.mark.parametrize(("name", "description"), [
    ("x" * 64, "is longer than PostgreSQL's 63-byte identifier limit"),
    ("é" * 32, "is longer than PostgreSQL's 63-byte identifier limit"),
    ("cust\x00omers", "must not contain NUL bytes"),
])
def test_identifiers_postgresql_would_truncate_or_refuse_are_invalid(name: str,
                                                                     description: str) -> None:
    err = step(plan([get("g", name, {"id": 1})]), "g").error
    assert only_violation(err) == ("operations[0].get.table", description)


def test_an_unqualified_table_is_in_the_default_schema_and_a_qualified_one_exact() -> None:
    p = plan([get("a", "invoices", {"id": 1}), get("b", "billing.invoices", {"id": 1}),
              get("c", "public.customers", {"id": 1}), get("d", "Billing.invoices", {"id": 1})])
    assert [s.id for s in p.invalid] == ["a", "d"]
    assert step(p, "b").planned.spec.table is CATALOG.tables["billing.invoices"]


def test_an_unknown_handler_is_invalid() -> None:
    err = step(plan([call("c", "no_such_handler")]), "c").error
    assert only_violation(err) == ("operations[0].call.handler",
                                   'no custom handler named "no_such_handler"')


def test_a_malformed_reference_is_an_invalid_step() -> None:
    p = plan([get("a", "customers", {"id": 1}),
              insert("b", "orders", {"customer_id": ref("a")})])
    err = step(p, "b").error
    assert isinstance(err, InvalidArgument) and err.operation_id == "b"
    assert err.violations[0].field == "operations[1]" and "must be" in err.message


# --- references and dependencies -------------------------------------------------------------

def test_a_reference_makes_the_referring_operation_depend_on_its_target() -> None:
    p = plan([insert("c", "customers", ADA),
              insert("o", "orders", {"customer_id": ref("c.id"), "total": "1.00"})])
    assert step(p, "c").depends_on == [] and step(p, "o").depends_on == ["c"]
    spec = step(p, "o").planned.spec
    [row] = spec.rows
    values = {c.name: v for c, v in zip(spec.columns, row, strict=True)}
    assert values["customer_id"].raw == Ref("c", 0, "id")  # deferred until "c" has run


@pytest.mark.parametrize("operation", [
    get("x", "orders", {"id": ref("c.id")}),
    query("x", "orders", filters=[{"column": "customer_id", "op": "OPERATOR_IN",
                                   "value": [1, ref("c.2.id")]}]),
    update("x", "orders", {"customer_id": ref("c.id")}, key={"id": 1}),
    delete("x", "orders",
           filters=[{"column": "customer_id", "op": "OPERATOR_EQ", "value": ref("c.id")}]),
    call("x", nested={"ids": [ref("c.id")]}),
    insert("x", "events", {"payload": {"who": ref("c.id")}}),
    query("x", "orders", where={"logic": "LOGIC_OR", "groups": [{"logic": "LOGIC_NOT", "filters": [
        {"column": "customer_id", "op": "OPERATOR_EQ", "value": ref("c.id")}]}]}),
    update("x", "orders", {"status": "x"}, where={"groups": [{"groups": [{"filters": [
        {"column": "customer_id", "op": "OPERATOR_IN", "value": [ref("c.0.id")]}]}]}]}),
], ids=["get key", "query filter", "update set", "delete filter", "call args", "jsonb",
        "query where", "update where"])
def test_references_count_wherever_values_go(operation: dict) -> None:
    p = plan([insert("c", "customers", ADA), operation])
    assert not p.invalid and step(p, "x").depends_on == ["c"]


def test_a_reference_to_an_unknown_operation_refuses_the_batch() -> None:
    err = refused([insert("o", "orders", {"customer_id": ref("ghost.id")})])
    assert only_violation(err) == ("operations[0]",
                                   'reference ghost.id: no operation "ghost" in this batch')
    assert err.operation_id == "o"


def test_an_operation_cannot_refer_to_itself() -> None:
    err = refused([update("u", "orders", {"customer_id": ref("u.id")}, key={"id": 1})])
    assert "an operation cannot depend on itself" in err.message


def test_atomic_forward_reference_is_invalid_before_anything_runs() -> None:
    err = refused([insert("o", "orders", {"customer_id": ref("c.id")}),
                   insert("c", "customers", ADA)])
    assert only_violation(err) == (
        "operations[0]",
        'reference c.id: "c" comes later, and an atomic batch runs in request order')


def test_independent_forward_reference_is_allowed_and_orders_the_operations() -> None:
    p = plan([insert("o", "orders", {"customer_id": ref("c.id")}),
              insert("c", "customers", ADA)], mode="MODE_INDEPENDENT")
    assert step(p, "o").depends_on == ["c"]
    assert ids_in_order(p) == ["c", "o"]


def test_a_reference_to_a_column_the_target_does_not_return_is_invalid() -> None:
    err = refused([insert("c", "customers", ADA),
                   insert("o", "orders", {"customer_id": ref("c.email")})])
    field, description = only_violation(err)
    assert field == "operations[1]"
    assert description == ("reference c.email: operation \"c\" returns only ['id'] (add the "
                           "column to its returning / columns)")


@pytest.mark.parametrize("returning", [["email"], ["*"]])
def test_a_returned_column_can_be_referenced(returning: list[str]) -> None:
    p = plan([insert("c", "customers", ADA, returning=returning),
              update("u", "customers", {"name": ref("c.email")}, key={"id": 1})])
    assert not p.invalid


def test_a_get_or_query_returns_every_column_unless_columns_are_listed() -> None:
    p = plan([get("g", "customers", {"id": 1}), query("q", "customers", columns=["id"]),
              call("a", x=ref("g.email")), call("b", x=ref("q.id"))])
    assert not p.invalid
    err = refused([query("q", "customers", columns=["id"]), call("b", x=ref("q.email"))])
    assert "returns only ['id']" in err.message


def test_what_a_handler_returns_is_not_known_so_any_column_can_be_referenced() -> None:
    p = plan([call("c"), get("g", "customers", {"id": ref("c.anything")})])
    assert not p.invalid and step(p, "g").depends_on == ["c"]


def test_a_reference_to_an_invalid_operation_is_kept_as_a_dependency() -> None:
    p = plan([insert("c", "nope", ADA), get("g", "customers", {"id": ref("c.whatever")})],
             mode="MODE_INDEPENDENT")
    assert [s.id for s in p.invalid] == ["c"] and step(p, "g").depends_on == ["c"]


def test_depends_on_an_unknown_operation_names_the_depends_on_entry() -> None:
    err = refused([get("a", "customers", {"id": 1}),
                   {**get("b", "customers", {"id": 2}), "dependsOn": ["a", "zz"]}])
    assert only_violation(err) == ("operations[1].depends_on[1]",
                                   'dependency "zz": no operation "zz" in this batch')


def test_depends_on_itself_is_invalid() -> None:
    err = refused([{**get("a", "customers", {"id": 1}), "dependsOn": ["a"]}])
    assert err.violations[0].field == "operations[0].depends_on[0]"
    assert "cannot depend on itself" in err.message


def test_atomic_depends_on_a_later_operation_is_invalid() -> None:
    err = refused([{**get("a", "customers", {"id": 1}), "dependsOn": ["b"]},
                   get("b", "customers", {"id": 2})])
    assert "comes later, and an atomic batch runs in request order" in err.message


def test_dependencies_are_explicit_ones_then_references_each_once() -> None:
    p = plan([call("a"), call("b"), call("c"),
              {**call("d", x=ref("c.x"), y=ref("a.0.y"), z=ref("c.1.z")),
               "dependsOn": ["b", "a"]}])
    assert step(p, "d").depends_on == ["b", "a", "c"]


def test_an_independent_cycle_is_invalid_naming_the_operations_on_it() -> None:
    err = refused([{**call("a"), "dependsOn": ["c"]}, call("b", x=ref("a.x")),
                   call("c", x=ref("b.x")), call("free")], mode="MODE_INDEPENDENT")
    field, description = only_violation(err)
    assert field == "operations[0].depends_on"
    assert description == "dependency cycle among operations ['a', 'b', 'c']"


def test_an_operation_behind_a_cycle_is_reported_with_it() -> None:
    err = refused([{**call("a"), "dependsOn": ["b"]}, {**call("b"), "dependsOn": ["a"]},
                   call("after", x=ref("b.x"))], mode="MODE_INDEPENDENT")
    assert "['a', 'after', 'b']" in err.message


def test_unit_order_keeps_request_order_where_dependencies_allow() -> None:
    p = plan([call("a", x=ref("d.x")), call("b"), call("c", x=ref("b.x")), call("d"),
              call("e")], mode="MODE_INDEPENDENT")
    assert ids_in_order(p) == ["b", "c", "d", "a", "e"]


def test_a_diamond_is_not_a_cycle() -> None:
    p = plan([call("top"), call("left", x=ref("top.x")), call("right", x=ref("top.x")),
              call("bottom", l=ref("left.x"), r=ref("right.x"))], mode="MODE_INDEPENDENT")
    assert sorted(step(p, "bottom").depends_on) == ["left", "right"]  # (args: a map)
    assert ids_in_order(p) == ["top", "left", "right", "bottom"]


# --- groups (INDEPENDENT) ---------------------------------------------------------------------

INDEPENDENT = {"mode": "MODE_INDEPENDENT"}


def grouped(group: str, operation: dict) -> dict:
    return {**operation, "group": group}


def units_of(operations: list[dict]) -> list[tuple[str, list[str], list[str]]]:
    """(group, step ids, depends_on) of each unit of an INDEPENDENT plan."""
    p = plan(operations, **INDEPENDENT)
    return [(u.group, [s.id for s in u.steps], u.depends_on) for u in p.units]


@pytest.mark.parametrize("mode", [None, "MODE_ATOMIC"])
def test_a_group_in_an_atomic_batch_is_invalid(mode: str | None) -> None:
    fields = {"mode": mode} if mode else {}
    err = refused([call("a"), grouped("g", call("b"))], **fields)
    assert only_violation(err) == ("operations[1].group", "groups apply to MODE_INDEPENDENT (an "
                                   "atomic batch is one transaction already)")
    assert err.operation_id == "b"


@pytest.mark.parametrize("name", ["has space", "dot.ted", "é", "x" * 65, "a/b"])
def test_a_malformed_group_name_is_invalid(name: str) -> None:
    err = refused([grouped("ok", call("a")), grouped(name, call("b"))], **INDEPENDENT)
    assert only_violation(err) == ("operations[1].group",
                                   "must be 1-64 characters of A-Z a-z 0-9 _ -")


def test_an_atomic_plan_has_no_units() -> None:
    assert plan([call("a"), call("b")]).units == []


def test_without_groups_every_operation_is_a_unit_of_its_own() -> None:
    assert units_of([call("a"), call("b", x=ref("a.x"))]) == [("", ["a"], []),
                                                            ("", ["b"], ["a"])]


def test_a_group_is_one_unit_in_request_order_placed_at_its_first_operation() -> None:
    assert units_of([call("lone"), grouped("g", call("g1")), grouped("h", call("h1")),
                     grouped("g", call("g2")), call("other"), grouped("x" * 64, call("g3"))]) \
        == [("", ["lone"], []), ("g", ["g1", "g2"], []), ("h", ["h1"], []),
            ("", ["other"], []), ("x" * 64, ["g3"], [])]


def test_group_names_and_operation_ids_are_separate_names() -> None:
    assert units_of([grouped("a", call("a")), grouped("a", call("b"))]) == [
        ("a", ["a", "b"], [])]


def test_a_unit_waits_for_what_its_members_need_outside_it() -> None:
    ops = [call("c"), call("d"),
           grouped("g", call("g1", x=ref("c.x"))),
           grouped("g", {**call("g2", y=ref("g1.y"), z=ref("c.z")), "dependsOn": ["d"]})]
    assert units_of(ops)[2] == ("g", ["g1", "g2"], ["c", "d"])


@pytest.mark.parametrize(("first", "field", "what"), [
    (call("first", x=ref("a.x")), "operations[0]", "reference a.x"),
    ({**call("first"), "dependsOn": ["a"]}, "operations[0].depends_on[0]", 'dependency "a"'),
], ids=["reference", "depends_on"])
def test_a_forward_reference_inside_a_group_is_invalid(first: dict, field: str,
                                                       what: str) -> None:
    err = refused([grouped("g", first), call("b"), grouped("g", call("a"))], **INDEPENDENT)
    assert only_violation(err) == (
        field, f'{what}: "a" comes later in group "g", which runs in request order')
    assert err.operation_id == "first"


def test_a_forward_reference_out_of_a_group_is_allowed() -> None:
    first = grouped("g", call("first", x=ref("a.x")))
    assert units_of([first, grouped("h", call("a"))])[0] == ("g", ["first"], ["a"])
    assert units_of([first, call("a")])[0] == ("g", ["first"], ["a"])


def test_a_backward_reference_inside_a_group_is_no_dependency_of_the_group() -> None:
    assert units_of([grouped("g", call("a")), grouped("g", call("b", x=ref("a.x")))]) == [
        ("g", ["a", "b"], [])]


def test_a_cycle_between_groups_is_invalid_though_the_operations_have_none() -> None:
    # a1 -> b1 and b2 -> a2: no operation waits for itself, but group A waits for B and B for A.
    err = refused([grouped("A", call("a1", x=ref("b1.x"))), grouped("B", call("b1")),
                   grouped("B", call("b2", x=ref("a2.x"))), grouped("A", call("a2")),
                   call("free")], **INDEPENDENT)
    assert only_violation(err) == ("operations[0].group",
                                   "dependency cycle among groups ['A', 'B']")


def test_a_cycle_through_a_group_and_lone_operations_names_both() -> None:
    err = refused([call("x", v=ref("g2.v")), grouped("G", call("g1", v=ref("x.v"))),
                   grouped("G", call("g2")), call("after", v=ref("x.v"))], **INDEPENDENT)
    assert only_violation(err) == ("operations[0].depends_on",
                                   "dependency cycle among groups ['G'] and operations "
                                   "['after', 'x']")


def test_unit_order_follows_dependencies_between_groups() -> None:
    p = plan([grouped("A", call("a1", x=ref("b2.x"))), grouped("B", call("b1")),
              call("lone"), grouped("B", call("b2")), grouped("A", call("a2"))], **INDEPENDENT)
    assert [[s.id for s in u.steps] for u in unit_order(p.units)] == [
        ["b1", "b2"], ["a1", "a2"], ["lone"]]


# --- scopes ----------------------------------------------------------------------------------

ALL_KINDS = [insert("i", "customers", ADA), get("g", "customers", {"id": 1}),
             query("q", "customers"), update("u", "customers", {"name": "B"}, key={"id": 1}),
             delete("d", "customers", key={"id": 1}), call("c")]


def denied_ids(*scopes: str) -> list[str]:
    p = plan(ALL_KINDS, principal(*scopes))
    for s in p.invalid:
        assert isinstance(s.error, PermissionDenied) and s.planned is None
        assert s.error.code == grpc.StatusCode.PERMISSION_DENIED and s.error.operation_id == s.id
    return [s.id for s in p.invalid]


def test_without_a_principal_authentication_is_off_and_nothing_is_denied() -> None:
    assert not plan(ALL_KINDS, None).invalid


@pytest.mark.parametrize(("scopes", "denied"), [
    (("admin",), []),
    (("*",), []),
    ((), ["i", "g", "q", "u", "d", "c"]),
    (("read:public.*",), ["i", "u", "d", "c"]),
    (("write:public.customers",), ["g", "q", "c"]),
    (("call:ec*",), ["i", "g", "q", "u", "d"]),
    (("read:public.customers", "write:public.*", "call:echo"), []),
    (("read:billing.*", "call:other"), ["i", "g", "q", "u", "d", "c"]),
])
def test_scopes_allow_kinds_by_verb_and_pattern(scopes: tuple[str, ...],
                                                denied: list[str]) -> None:
    assert denied_ids(*scopes) == denied


def test_a_denial_says_which_scope_is_needed() -> None:
    err = step(plan([update("u", "orders", {"status": "x"}, key={"id": 1})],
                    principal("read:public.*")), "u").error
    assert err.message == ('principal "tester" may not update on table "public.orders" '
                           "(needs scope write:public.orders)")
    assert err.metadata == {"principal": "tester", "scope": "write:public.orders"}


def test_scopes_are_checked_before_the_table_is_looked_up() -> None:
    err = step(plan([get("g", "secret_table", {"id": 1})], principal("read:public.orders")),
               "g").error
    assert isinstance(err, PermissionDenied) and "secret_table" in err.message


def test_scope_patterns_are_case_sensitive_like_identifiers() -> None:
    p = plan([get("g", "customers", {"id": 1})], principal("read:public.Customers"))
    assert isinstance(step(p, "g").error, PermissionDenied)


def test_an_unqualified_table_is_matched_in_the_default_schema() -> None:
    ctx = PlanContext(CATALOG, SETTINGS)
    p = plan_batch(request([get("g", "invoices", {"id": 1})]), ctx, principal("read:billing.*"))
    assert isinstance(step(p, "g").error, PermissionDenied)
    assert 'table "public.invoices"' in step(p, "g").error.message


# --- insert conflicts --------------------------------------------------------------------------

def conflict_sql(on_conflict: dict, tbl: str = "customers", row: dict = ADA) -> str:
    p = plan([insert("i", tbl, row, onConflict=on_conflict)])
    assert not p.invalid, p.invalid[0].error
    return step(p, "i").planned.spec.conflict_sql


def conflict_error(on_conflict: dict, tbl: str = "customers") -> tuple[str, str]:
    err = step(plan([insert("i", tbl, ADA, onConflict=on_conflict)]), "i").error
    assert err is not None
    return only_violation(err)


def test_do_nothing_targets_the_primary_key_unless_columns_are_given() -> None:
    assert conflict_sql({"action": "ACTION_DO_NOTHING"}) == ' ON CONFLICT ("id") DO NOTHING'
    assert conflict_sql({"action": "ACTION_DO_NOTHING", "conflictColumns": ["email"]}) == \
        ' ON CONFLICT ("email") DO NOTHING'


def test_an_upsert_sets_the_inserted_columns_and_increments_the_version() -> None:
    assert conflict_sql({"action": "ACTION_UPDATE", "conflictColumns": ["email"]}) == (
        ' ON CONFLICT ("email") DO UPDATE SET "name" = EXCLUDED."name", '
        '"version" = "public"."customers"."version" + 1')
    assert conflict_sql({"action": "ACTION_UPDATE"}, "order_items",
                        {"order_id": 1, "line": 2, "qty": 3}) == \
        ' ON CONFLICT ("order_id", "line") DO UPDATE SET "qty" = EXCLUDED."qty"'


@pytest.mark.parametrize(("on_conflict", "field", "description"), [
    ({"conflictColumns": ["email"]}, "operations[0].insert.on_conflict",
     "conflict_columns and update_columns need action ACTION_DO_NOTHING or ACTION_UPDATE"),
    ({"action": "ACTION_DO_NOTHING", "updateColumns": ["name"]},
     "operations[0].insert.on_conflict.update_columns", "needs action ACTION_UPDATE"),
    ({"action": "ACTION_UPDATE", "updateColumns": ["tags"]},
     "operations[0].insert.on_conflict.update_columns[0]",
     '"tags" is not among the inserted columns'),
    ({"action": "ACTION_UPDATE", "conflictColumns": ["name", "email"]},
     "operations[0].insert.on_conflict.update_columns", "nothing to update"),
    ({"action": 9}, "operations[0].insert.on_conflict.action", "unknown action"),
], ids=["columns without action", "do nothing with updates", "update not inserted",
        "nothing left", "unknown action"])
def test_conflict_handling_that_cannot_mean_anything_is_invalid(
        on_conflict: dict, field: str, description: str) -> None:
    assert conflict_error(on_conflict) == (field, description)
