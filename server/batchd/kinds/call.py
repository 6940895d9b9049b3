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
dicts) or None.

Arguments are declared by annotating the second parameter with a pydantic model::

    class Reserve(BaseModel):
        product_id: int
        quantity: PositiveInt

    @handler("reserve_stock")
    async def reserve_stock(ctx: HandlerContext, args: Reserve) -> dict[str, Any]: ...

Then the handler gets the validated model, and arguments that do not fit are INVALID_ARGUMENT
with a field violation per problem (``operations[2].call.args.quantity``) before the handler
runs: when the batch is planned, or, for arguments holding references, once they are resolved.
A handler whose second parameter is not a model gets the plain dict.

It signals expected failures by raising a ``batchd.errors.BatchdError``;
database errors are mapped like any other operation's. Modules holding handlers are named in
the ``handler_modules`` setting and imported at start-up. A handler's name has no dot: a
dotted name is a SQL function's ("schema.function"), and scopes (``call:PATTERN``) must not
confuse the two.

A call names a handler or, instead, a SQL function the operator exposed
(``CallOperation.function``): that is batchd.kinds.function, with no Python at all.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from batchd.catalog import qualified
from batchd.errors import FieldViolation, InvalidArgument
from batchd.kinds import function
from batchd.kinds.base import Kind, Output, PlanContext, Planned, RunContext
from batchd.kinds.params import find_refs
from batchd.v1 import batch_pb2
from batchd.values import Ref, plain_json, struct_from_proto

HandlerContext = RunContext
HandlerResult = Mapping[str, Any] | Iterable[Mapping[str, Any]] | None
HandlerFunc = Callable[[HandlerContext, Any], Awaitable[HandlerResult]]
F = TypeVar("F", bound=Callable[..., Awaitable[HandlerResult]])


@dataclass(frozen=True, slots=True)
class Handler:
    func: HandlerFunc
    model: type[BaseModel] | None  # the declared arguments, if any

    def validate(self, args: dict[str, Any], path: str) -> Any:
        """The arguments the function gets: the model, or the dict as it is."""
        if self.model is None:
            return args
        try:
            return self.model.model_validate(args)
        except ValidationError as exc:
            violations = [FieldViolation(
                ".".join([path, *(str(part) for part in error["loc"])]), error["msg"])
                for error in exc.errors(include_url=False)]
            raise InvalidArgument("; ".join(f"{v.field}: {v.description}" for v in violations),
                                  violations=violations) from None


_registry: dict[str, Handler] = {}


def handler(name: str) -> Callable[[F], F]:
    """Register an async function as the custom handler ``name``."""
    if not name or len(name) > 128:
        raise ValueError("a handler name must have 1 to 128 characters")
    if "." in name:
        raise ValueError(f"handler name {name!r} has a dot, which names SQL functions "
                         "(schema.function)")

    def register(func: F) -> F:
        if name in _registry and _registry[name].func is not func:
            raise ValueError(f"handler {name!r} is already registered")
        _registry[name] = Handler(func, _arguments_model(func))
        return func
    return register


def _arguments_model(func: Callable[..., Any]) -> type[BaseModel] | None:
    """The pydantic model the second parameter is annotated with, if it is one."""
    parameters = list(inspect.signature(func).parameters.values())
    if len(parameters) < 2:
        return None
    annotation = typing.get_type_hints(func).get(parameters[1].name)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def load_modules(modules: Iterable[str]) -> None:
    for module in modules:
        importlib.import_module(module)


def registered() -> Mapping[str, Handler]:
    return _registry


@dataclass(slots=True)
class CallSpec:
    name: str
    handler: Handler
    args: dict[str, Any]
    path: str  # of the arguments, for field violations


class CallKind(Kind):
    name = "call"
    access = "call"
    on_table = False

    def scope_target(self, message: batch_pb2.CallOperation,
                     default_schema: str) -> tuple[str, str]:
        if message.function:
            target = qualified(message.function, default_schema)
            return target, f'function "{target}"'
        return message.handler, f'handler "{message.handler}"'

    def plan(self, message: batch_pb2.CallOperation, path: str, ctx: PlanContext,
             refs: list[Ref]) -> Planned:
        if bool(message.handler) == bool(message.function):
            raise InvalidArgument.field(path, "exactly one of handler and function must be set")
        if message.function:
            spec, columns = function.plan(message, path, ctx, refs)
            return Planned(self.name, spec, columns)
        found = _registry.get(message.handler)
        if found is None:
            raise InvalidArgument.field(f"{path}.handler",
                                        f'no custom handler named "{message.handler}"')
        args = struct_from_proto(message.args)
        found_refs = find_refs(args)
        refs.extend(found_refs)
        if not found_refs:  # checked now, before anything of the batch runs
            found.validate(plain_json(args), f"{path}.args")
        return Planned(self.name, CallSpec(message.handler, found, args, f"{path}.args"), None)

    async def run(self, spec: CallSpec | function.FunctionSpec, ctx: RunContext) -> Output:
        if isinstance(spec, function.FunctionSpec):
            return await function.run(spec, ctx)
        args = plain_json(ctx.results.resolve(spec.args, f"call {spec.name} args"))
        result = await spec.handler.func(ctx, spec.handler.validate(args, spec.path))
        if result is None:
            rows: list[Mapping[str, Any]] = []
        elif isinstance(result, Mapping):
            rows = [result]
        else:
            rows = list(result)
        return Output(rows, None, rows_affected=len(rows))
