"""Planning a call of a SQL function (batchd.kinds.function), on a hand-made catalog: the
overload a call means, its arguments coerced or deferred, and the scope that covers it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import grpc
import pytest

from batchd.catalog import Catalog, Function
from batchd.errors import InvalidArgument
from batchd.kinds.base import PlanContext
from batchd.kinds.call import handler
from batchd.kinds.function import FunctionSpec
from batchd.kinds.params import Deferred
from tests.unit.shop import CATALOG, SETTINGS, col, insert, plan, principal, step


def function(qualified: str, arguments: list[tuple[str, str, str, bool]],
             result: list[tuple[str, str, str]], returns: str = "integer") -> Function:
    """``arguments``: (name, kind, type, has_default); ``result``: (name, kind, type)."""
    schema, _, name = qualified.partition(".")
    return Function(
        schema=schema, name=name,
        arguments=tuple(col(n, kind, type_sql, has_default=default)
                        for n, kind, type_sql, default in arguments),
        returns=returns, returns_set=returns.startswith("SETOF "),
        result_columns=tuple(col(n, kind, type_sql) for n, kind, type_sql in result))


FUNCTIONS = [
    function("public.area", [("side", "numeric", "numeric", False)],
             [("area", "numeric", "numeric")], "numeric"),
    function("public.area", [("width", "numeric", "numeric", False),
                             ("height", "numeric", "numeric", True)],
             [("area", "numeric", "numeric")], "numeric"),
    function("public.points", [("a", "int4", "integer", False), ("b", "int4", "integer", False)],
             [("points", "int4", "integer")]),
    function("public.points", [("a", "numeric", "numeric", False),
                               ("b", "numeric", "numeric", False)],
             [("points", "numeric", "numeric")], "numeric"),
    function("api.label", [("n", "int8", "bigint", False)],
             [("id", "int8", "bigint"), ("label", "text", "text")], "SETOF record"),
]
by_name: dict[str, tuple[Function, ...]] = {}
for f in FUNCTIONS:
    by_name[f.qualified_name] = (*by_name.get(f.qualified_name, ()), f)
CTX = PlanContext(Catalog(CATALOG.tables, "public", functions=by_name), SETTINGS)


def call(op_id: str, name: str, **args: Any) -> dict[str, Any]:
    return {"id": op_id, "call": {"function": name, "args": args}}


def spec_of(op: dict[str, Any]) -> FunctionSpec:
    s = step(plan([op], ctx=CTX), op["id"])
    assert s.error is None, s.error
    assert s.planned is not None and isinstance(s.planned.spec, FunctionSpec)
    return s.planned.spec


def error_of(op: dict[str, Any], **fields: Any) -> Any:
    s = step(plan([op], ctx=CTX, **fields), op["id"])
    assert s.error is not None
    return s.error


def test_an_overload_is_chosen_by_the_names_given_and_defaults_count():
    assert spec_of(call("c", "area", side="2")).function.signature == "area(side numeric)"
    chosen = spec_of(call("c", "area", width="2")).function  # height has a default
    assert chosen.signature == "area(width numeric, height numeric)"


def test_overloads_with_the_same_names_are_refused_whatever_the_values():
    error = error_of(call("c", "points", a=1, b=2))
    assert isinstance(error, InvalidArgument)
    assert error.violations[0].field == "operations[0].call.function"
    assert error.violations[0].description == (
        "function public.points is overloaded: points(a integer, b integer), "
        "points(a numeric, b numeric); name the arguments of exactly one")


def test_arguments_are_coerced_when_planned_and_deferred_when_they_hold_references():
    assert spec_of(call("c", "area", side="1.50")).values == {"side": Decimal("1.50")}
    p = plan([call("n", "api.label", n="9007199254740993"),
              call("c", "area", side={"$ref": "n.id"})], ctx=CTX)
    assert step(p, "n").planned.spec.values == {"n": 9007199254740993}  # type: ignore[union-attr]
    deferred = step(p, "c").planned.spec.values["side"]  # type: ignore[union-attr]
    assert isinstance(deferred, Deferred) and deferred.what == "argument"
    assert step(p, "c").depends_on == ["n"]


def test_a_reference_must_name_a_result_column_of_the_function_which_the_error_names():
    with pytest.raises(InvalidArgument) as caught:
        plan([call("n", "api.label", n=1), insert("i", "orders", {"total": {"$ref": "n.x"}})],
             ctx=CTX)
    assert caught.value.violations[0].description == (
        "reference n.x: operation \"n\" returns only ['id', 'label'] (the result columns of "
        "function api.label(n bigint))")
    assert "returning" not in caught.value.message


def test_a_call_scope_covers_the_qualified_function_name_only():
    allowed = step(plan([call("c", "area", side=1)], principal("call:public.area"), ctx=CTX),
                   "c")
    assert allowed.error is None
    for scope in ("call:area", "call:api.*", "read:public.*"):
        denied = step(plan([call("c", "area", side=1)], principal(scope), ctx=CTX), "c")
        assert denied.error is not None
        assert denied.error.code == grpc.StatusCode.PERMISSION_DENIED
        assert denied.error.metadata["scope"] == "call:public.area"


def test_a_handler_name_with_a_dot_is_refused():
    with pytest.raises(ValueError, match="dot"):
        handler("public.area")


@pytest.mark.parametrize(("name", "empty"), [("../api.add", "before"), (".add", "before"),
                                             ("api.", "after")])
def test_a_function_name_with_an_empty_schema_or_name_says_which_part_is_empty(name, empty):
    error = error_of(call("c", name))
    assert isinstance(error, InvalidArgument)
    assert error.violations[0].field == "operations[0].call.function"
    assert error.violations[0].description == (
        f'"{name}" is not a function name: the part {empty} its first "." is empty; write '
        '"name" (in schema "public") or "schema.name"')
