"""The one list of operation kinds, and the dispatcher over it.

Each field of the proto's ``Operation.kind`` oneof is one ``Kind`` here
(``batchd.kinds.base``): what it needs (scope verb, table or handler, key), how it plans and
runs, and whether it coalesces. The planner, the authorization, the catalog's per-table lists
and GetSchema all read this list; adding a kind is its module, a line here, and the proto.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from batchd.errors import InvalidArgument
from batchd.kinds.base import Kind, Output, PlanContext, Planned, RunContext
from batchd.kinds.call import CallKind
from batchd.kinds.insert import InsertKind
from batchd.kinds.read import GetKind, QueryKind
from batchd.kinds.write import DeleteKind, UpdateKind
from batchd.v1 import batch_pb2
from batchd.values import Ref

KINDS: Mapping[str, Kind] = MappingProxyType({k.name: k for k in (
    InsertKind(), GetKind(), QueryKind(), UpdateKind(), DeleteKind(), CallKind())})

# Kinds addressed at tables, each with whether it works on a table without a primary key.
TABLE_KINDS: Mapping[str, bool] = MappingProxyType(
    {name: kind.keyless for name, kind in KINDS.items() if kind.on_table})


def access_of(kind: str) -> str:
    """The scope verb operation kind ``kind`` needs; ``admin`` for a kind batchd lacks."""
    found = KINDS.get(kind)
    return found.access if found is not None else "admin"


def kind_of(op: batch_pb2.Operation, path: str) -> Kind:
    """The kind of ``op``, or INVALID_ARGUMENT when it sets none."""
    name = op.WhichOneof("kind")
    if name is None:
        raise InvalidArgument.field(path, f"one of {', '.join(KINDS)} must be set")
    return KINDS[name]


def plan(op: batch_pb2.Operation, kind: Kind, path: str, ctx: PlanContext,
         refs: list[Ref]) -> Planned:
    return kind.plan(getattr(op, kind.name), f"{path}.{kind.name}", ctx, refs)


async def run(planned: Planned, ctx: RunContext) -> Output:
    return await KINDS[planned.kind].run(planned.spec, ctx)
