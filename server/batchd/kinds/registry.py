"""The dispatcher: which kind plans and runs an operation.

Each operation kind of the proto's ``Operation.kind`` oneof maps to one object with ``plan``
and ``run`` (``batchd.kinds.base.Kind``). The built-in CRUD kinds work on catalog tables;
``call`` reaches the custom handlers registered by name.
"""

from __future__ import annotations

from collections.abc import Mapping

from batchd.kinds.base import Kind, Output, PlanContext, Planned, RunContext
from batchd.kinds.call import CallKind
from batchd.kinds.insert import InsertKind
from batchd.kinds.read import GetKind, QueryKind
from batchd.kinds.write import DeleteKind, UpdateKind
from batchd.v1 import batch_pb2

BUILTIN_KINDS: tuple[Kind, ...] = (InsertKind(), GetKind(), QueryKind(), UpdateKind(),
                                   DeleteKind(), CallKind())


class Dispatcher:
    def __init__(self, kinds: Mapping[str, Kind] | None = None) -> None:
        self.kinds = dict(kinds) if kinds else {k.name: k for k in BUILTIN_KINDS}

    def plan(self, op: batch_pb2.Operation, kind: str, path: str, ctx: PlanContext) -> Planned:
        return self.kinds[kind].plan(getattr(op, kind), f"{path}.{kind}", ctx)

    async def run(self, planned: Planned, ctx: RunContext) -> Output:
        return await self.kinds[planned.kind].run(planned.spec, ctx)
