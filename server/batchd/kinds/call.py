"""call: custom handlers, registered by name with ``@handler``.

    from batchd import handler, HandlerContext

    @handler("reserve_stock")
    async def reserve_stock(ctx: HandlerContext, args: dict[str, Any]) -> dict[str, Any]:
        row = await ctx.connection.fetchrow("UPDATE products SET stock = stock - $2 "
                                            "WHERE id = $1 AND stock >= $2 RETURNING stock",
                                            args["product_id"], args["quantity"])
        if row is None:
            raise FailedPrecondition("not enough stock")
        return {"stock": row["stock"]}

A handler runs on the batch's connection inside its transaction (ATOMIC) or its own
(INDEPENDENT), so what it writes commits or rolls back with the rest. It gets its arguments
with references resolved and integral numbers as ints, and returns a row (dict), rows (list of
dicts) or None. It signals expected failures by raising a ``batchd.errors.BatchdError``;
database errors are mapped like any other operation's. Modules holding handlers are named in
the ``handler_modules`` setting and imported at start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from batchd.errors import InvalidArgument
from batchd.kinds.base import Kind, Output, PlanContext, Planned, RunContext
from batchd.kinds.params import find_refs
from batchd.v1 import batch_pb2
from batchd.values import Ref, plain_json, struct_from_proto

HandlerContext = RunContext
HandlerResult = Mapping[str, Any] | Iterable[Mapping[str, Any]] | None
HandlerFunc = Callable[[HandlerContext, dict[str, Any]], Awaitable[HandlerResult]]

_registry: dict[str, HandlerFunc] = {}


def handler(name: str) -> Callable[[HandlerFunc], HandlerFunc]:
    """Register an async function as the custom handler ``name``."""
    if not name or len(name) > 128:
        raise ValueError("a handler name must have 1 to 128 characters")

    def register(func: HandlerFunc) -> HandlerFunc:
        if name in _registry and _registry[name] is not func:
            raise ValueError(f"handler {name!r} is already registered")
        _registry[name] = func
        return func
    return register


def load_modules(modules: Iterable[str]) -> None:
    for module in modules:
        importlib.import_module(module)


def registered() -> Mapping[str, HandlerFunc]:
    return _registry


@dataclass(slots=True)
class CallSpec:
    name: str
    func: HandlerFunc
    args: dict[str, Any]


class CallKind(Kind):
    name = "call"
    access = "call"
    on_table = False

    def target(self, message: batch_pb2.CallOperation) -> str:
        return message.handler

    def plan(self, message: batch_pb2.CallOperation, path: str, ctx: PlanContext,
             refs: list[Ref]) -> Planned:
        func = _registry.get(message.handler)
        if func is None:
            raise InvalidArgument.field(f"{path}.handler",
                                        f'no custom handler named "{message.handler}"')
        args = struct_from_proto(message.args)
        refs.extend(find_refs(args))
        return Planned(self.name, CallSpec(message.handler, func, args), None)

    async def run(self, spec: CallSpec, ctx: RunContext) -> Output:
        args = plain_json(ctx.results.resolve(spec.args, f"call {spec.name} args"))
        result = await spec.func(ctx, args)
        if result is None:
            rows: list[Mapping[str, Any]] = []
        elif isinstance(result, Mapping):
            rows = [result]
        else:
            rows = list(result)
        return Output(rows, None, rows_affected=len(rows))
