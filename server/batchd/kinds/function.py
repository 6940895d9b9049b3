"""call with ``function``: a PostgreSQL function the operator exposed (``expose_functions``),
called by name with named arguments, like PostgREST's /rpc.

    {"id": "sum", "call": {"function": "add_points", "args": {"a": 2, "b": "40"}}}

runs ``SELECT "add_points" FROM "public"."add_points"("a" => $1::integer, "b" => $2::integer)``.
Identifiers come from the catalog (batchd.catalog.Function), never from the request; each
argument is coerced by its own PostgreSQL type, as a column value would be (references
included), and bound as a parameter. Named notation is what makes a call independent of the
order the function declares its arguments in, and of arguments left to their defaults.

Overloads: the one function of that name whose argument names accept exactly the names given
(each is one of its arguments, and each of its arguments without a default is given). Types
do not choose: "2" would fit integer and numeric alike, and a request cannot say which it
meant, so two overloads with the same names are always refused, each signature listed.

The result is the function's rows, rendered by its result columns' types: a set-returning
function's rows, a scalar function's one row with one column named after the function, none
for void. A client decides how many rows a function returns, so at most ``max_page_size``
come back: one more fails the operation with OUT_OF_RANGE (a truncated result would pass for
the whole one).

It runs in the batch's transaction, as the principal's role if it has one, so EXECUTE grants
and row-level security apply (a refusal is PostgreSQL's 42501: PERMISSION_DENIED).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batchd.catalog import Function, did_you_mean
from batchd.errors import FieldViolation, InvalidArgument, OutOfRange
from batchd.kinds.base import NO_ROWS, Output, PlanContext, RunContext, rendering, select_list
from batchd.kinds.params import SqlParams, prepare
from batchd.v1 import batch_pb2
from batchd.values import Ref, struct_from_proto


@dataclass(slots=True)
class FunctionSpec:
    function: Function
    # The arguments given, by name, prepared for binding (references still Deferred).
    values: dict[str, Any]
    limit: int  # most rows the result may have


def plan(message: batch_pb2.CallOperation, path: str, ctx: PlanContext,
         refs: list[Ref]) -> tuple[FunctionSpec, frozenset[str]]:
    """The call of ``message.function``, and the columns its rows will have (for references
    to them). INVALID_ARGUMENT for an unknown function, an ambiguous overload, and arguments
    that are unknown, missing or do not fit their type (one field violation each)."""
    overloads = ctx.catalog.functions_named(message.function, f"{path}.function")
    args = struct_from_proto(message.args)
    function = choose(overloads, args, f"{path}.function")
    values = _prepare(function, args, f"{path}.args", refs)
    spec = FunctionSpec(function, values, ctx.settings.max_page_size)
    return spec, frozenset(c.name for c in function.result_columns)


def choose(overloads: Sequence[Function], args: Mapping[str, Any], path: str) -> Function:
    """The function a call naming ``args`` means: the only one, or the one overload that
    accepts exactly those names."""
    if len(overloads) == 1:
        return overloads[0]  # its own errors (_prepare) say more than "no overload fits"
    fitting = [f for f in overloads if f.accepts(args)]
    if len(fitting) == 1:
        return fitting[0]
    first = overloads[0]
    signatures = ", ".join(f.signature for f in overloads)
    raise InvalidArgument.field(path, f"function {first.qualified_name} is overloaded: "
                                      f"{signatures}; name the arguments of exactly one")


def _prepare(function: Function, args: Mapping[str, Any], path: str,
             refs: list[Ref]) -> dict[str, Any]:
    """Each given argument coerced by its type (or deferred until its references resolve),
    in the function's order; every problem at once, as a field violation each."""
    known = {a.name: a for a in function.arguments}
    violations = [FieldViolation(f"{path}.{name}",
                                 f"function {function.signature} has no argument "
                                 f'"{name}"{did_you_mean(name, known)}')
                  for name in args if name not in known]
    values: dict[str, Any] = {}
    for argument in function.arguments:
        field = f"{path}.{argument.name}"
        if argument.name not in args:
            if not argument.has_default:
                violations.append(FieldViolation(
                    field, f"missing: function {function.signature} needs it (no default)"))
            continue
        try:
            values[argument.name] = prepare(args[argument.name], argument, field, refs,
                                            what="argument")
        except InvalidArgument as exc:
            violations += exc.violations
    if violations:
        raise InvalidArgument("; ".join(f"{v.field}: {v.description}" for v in violations),
                              violations=violations)
    return values


async def run(spec: FunctionSpec, ctx: RunContext) -> Output:
    """Call the function on the batch's connection; its rows, at most ``spec.limit``."""
    function = spec.function
    params = SqlParams()
    named = ", ".join(
        f"{a.sql} => {params.add(ctx.results.finalize(spec.values[a.name]), a.cast_sql)}"
        for a in function.arguments if a.name in spec.values)
    call = f"{function.sql}({named})"
    if not function.result_columns:  # void: nothing to fetch
        await ctx.connection.execute(f"SELECT FROM {call}", *params.values)
        return Output([], NO_ROWS, rows_affected=0)
    # The columns by name, not *: a function replaced since the catalog was read fails here
    # (undefined column) rather than rendering what the catalog does not describe.
    records = await ctx.connection.fetch(
        f"SELECT {select_list(function.result_columns)} FROM {call} LIMIT {spec.limit + 1}",
        *params.values)
    if len(records) > spec.limit:
        raise OutOfRange(f"function {function.qualified_name} returned more than "
                         f"{spec.limit} rows (max_page_size)",
                         metadata={"limit": str(spec.limit)})
    return Output(records, rendering(function.result_columns), rows_affected=len(records))
