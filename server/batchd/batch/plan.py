"""A request, validated whole before anything runs: the batch plan.

Errors of the batch itself (operation count, a malformed request id, malformed or duplicate
operation ids, references to unknown operations or columns, dependency cycles, atomic forward
references; for groups: any group in ATOMIC mode, a malformed group name, a forward reference
inside a group, a cycle between groups) raise InvalidArgument for the whole request. An invalid
*operation* is kept as a step carrying its error: the atomic executor refuses the batch naming
every invalid operation, the independent one fails just those operations (a group with one is
refused whole) and skips their dependents. An operation outside the caller's scopes is such a
step too, with PermissionDenied (see batchd.principals); it is checked before the operation is
planned, so a denied caller learns nothing about the table or handler.

INDEPENDENT plans are cut into units (``BatchPlan.units``), what runs in one transaction: the
operations of a group, in request order, or one operation outside any group. A unit waits for
the operations outside it that its members reference or depend on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from batchd import offload
from batchd.batch.idempotency import Claim, claim_of
from batchd.errors import BatchdError, InvalidArgument
from batchd.kinds import registry as kinds
from batchd.kinds.base import PlanContext, Planned
from batchd.kinds.function import FunctionSpec
from batchd.principals import Principal, authorize_operation
from batchd.v1 import batch_pb2
from batchd.values import CoercionError, Ref

OPERATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(slots=True)
class Step:
    index: int
    id: str
    planned: Planned | None
    error: BatchdError | None
    # Operations that must succeed first: explicit depends_on plus referenced ones, in order.
    depends_on: list[str] = field(default_factory=list)
    # The operation's group (INDEPENDENT only); "" for none.
    group: str = ""


@dataclass(slots=True)
class Unit:
    """What an INDEPENDENT batch runs in one transaction: the operations of a group, in request
    order, or one operation outside any group."""

    index: int  # position in BatchPlan.units
    group: str  # "" for an operation outside any group
    steps: list[Step]
    # Operations outside the unit that must succeed first (its members' dependencies), in order.
    depends_on: list[str] = field(default_factory=list)


@dataclass(slots=True)
class BatchPlan:
    steps: list[Step]
    atomic: bool
    validate_only: bool
    isolation: str | None
    read_only: bool
    # Event-loop time by which the caller stops waiting; becomes PostgreSQL's statement_timeout.
    deadline: float | None = None
    # The request id to claim, and its answer to store (batchd.batch.idempotency); None: no id.
    claim: Claim | None = None
    # The database role the operations run as (the principal's; None: batchd's own).
    role: str | None = None
    # INDEPENDENT: the units, ordered by their first operation; ATOMIC: none.
    units: list[Unit] = field(default_factory=list)

    @property
    def invalid(self) -> list[Step]:
        return [s for s in self.steps if s.error is not None]


_ISOLATION = {
    batch_pb2.ISOLATION_LEVEL_UNSPECIFIED: None,
    batch_pb2.ISOLATION_LEVEL_READ_COMMITTED: "read_committed",
    batch_pb2.ISOLATION_LEVEL_REPEATABLE_READ: "repeatable_read",
    batch_pb2.ISOLATION_LEVEL_SERIALIZABLE: "serializable",
}


# Values past which a request is planned on a worker thread: coercing a 100,000-row insert
# takes seconds of CPU, and on the event loop it would stall every other call (health too).
OFF_LOOP_VALUES = 20_000
# The fewest bytes a value, an operation or a row takes in a serialized request (a field's tag
# and length): a request smaller than N * MIN_BYTES cannot hold N of them, whatever it holds,
# and need not be counted.
MIN_BYTES = 2


async def plan_request(request: batch_pb2.BatchExecuteRequest, ctx: PlanContext,
                       principal: Principal | None) -> BatchPlan:
    """``plan_batch``, on a worker thread when the request is large. (The thread holds the
    GIL while it works, but hands it to the event loop every few milliseconds.)"""
    if request.ByteSize() < OFF_LOOP_VALUES * MIN_BYTES:  # too small to hold that many
        return plan_batch(request, ctx, principal)
    values = len(request.operations)
    for op in request.operations:
        rows = op.insert.rows  # empty for another kind (reading a oneof member sets nothing)
        if rows:
            values += len(rows) * max(1, len(rows[0].fields))
    if values < OFF_LOOP_VALUES:
        return plan_batch(request, ctx, principal)
    return await offload.run(plan_batch, request, ctx, principal)


def plan_batch(request: batch_pb2.BatchExecuteRequest, ctx: PlanContext,
               principal: Principal | None) -> BatchPlan:
    """The plan of ``request``; ``principal``: whose scopes bound the operations (None:
    authentication is off)."""
    _check_request(request, ctx)
    ops = request.operations
    atomic = request.mode != batch_pb2.MODE_INDEPENDENT
    claim = claim_of(request, principal.name if principal is not None else None)
    index_of = _index_ids(ops)
    _check_groups(ops, atomic)
    steps: list[Step] = []
    refs_of: list[list[Ref]] = []
    for i, op in enumerate(ops):
        refs: list[Ref] = []
        steps.append(_plan_step(i, op, ctx, principal, refs))
        refs_of.append(refs)
    for step, op, refs in zip(steps, ops, refs_of, strict=True):
        if refs or op.depends_on:
            step.depends_on = _dependencies(step, op, refs, steps, index_of, atomic)
    units = [] if atomic else _units(steps)
    _reject_cycles(units)
    return BatchPlan(steps, atomic, request.validate_only, _ISOLATION[request.isolation],
                     request.read_only, claim=claim, units=units,
                     role=principal.role if principal is not None else None)


def _check_request(request: batch_pb2.BatchExecuteRequest, ctx: PlanContext) -> None:
    """The limits and enums of the request as a whole."""
    ops = request.operations
    limits = ctx.settings
    if not ops:
        raise InvalidArgument.field("operations", "at least one operation is required")
    if len(ops) > limits.max_operations:
        raise InvalidArgument.field(
            "operations", f"{len(ops)} operations exceed the limit of {limits.max_operations}")
    total_rows = 0 if request.ByteSize() <= limits.max_rows_per_batch * MIN_BYTES else \
        sum(len(op.insert.rows) for op in ops)  # 0 for other kinds
    if total_rows > limits.max_rows_per_batch:
        raise InvalidArgument.field("operations", f"{total_rows} rows to insert exceed the limit "
                                                  f"of {limits.max_rows_per_batch} per batch")
    if request.mode not in (batch_pb2.MODE_UNSPECIFIED, batch_pb2.MODE_ATOMIC,
                            batch_pb2.MODE_INDEPENDENT):
        raise InvalidArgument.field("mode", f"unknown mode {request.mode}")
    if request.isolation not in _ISOLATION:
        raise InvalidArgument.field("isolation", f"unknown isolation level {request.isolation}")


def _index_ids(ops: Sequence[batch_pb2.Operation]) -> dict[str, int]:
    """Operation id -> position; every id well-formed and unique."""
    index_of: dict[str, int] = {}
    for i, op in enumerate(ops):
        if not OPERATION_ID.fullmatch(op.id):
            raise InvalidArgument.field(f"operations[{i}].id",
                                        "must be 1-64 characters of A-Z a-z 0-9 _ -")
        if op.id in index_of:
            raise InvalidArgument.field(f"operations[{i}].id", f'"{op.id}" is not unique (also '
                                        f"operations[{index_of[op.id]}])")
        index_of[op.id] = i
    return index_of


def _check_groups(ops: Sequence[batch_pb2.Operation], atomic: bool) -> None:
    """Group names well-formed, and only in INDEPENDENT mode."""
    for i, op in enumerate(ops):
        if not op.group:
            continue
        path = f"operations[{i}].group"
        if atomic:
            raise InvalidArgument.field(path, "groups apply to MODE_INDEPENDENT (an atomic batch "
                                              "is one transaction already)", operation_id=op.id)
        if not OPERATION_ID.fullmatch(op.group):
            raise InvalidArgument.field(path, "must be 1-64 characters of A-Z a-z 0-9 _ -",
                                        operation_id=op.id)


def _plan_step(i: int, op: batch_pb2.Operation, ctx: PlanContext, principal: Principal | None,
               refs: list[Ref]) -> Step:
    """One operation's step: planned, or carrying the error that makes it invalid (checked
    for scopes first, so a denied caller learns nothing of the table or handler)."""
    path = f"operations[{i}]"
    planned: Planned | None = None
    error: BatchdError | None = None
    try:
        kind = kinds.kind_of(op, path)
        if principal is not None:
            denied = authorize_operation(principal, kind, getattr(op, kind.name),
                                         ctx.catalog.default_schema)
            if denied is not None:
                raise denied
        planned = kinds.plan(op, kind, path, ctx, refs)
    except CoercionError as exc:  # a malformed reference
        error = InvalidArgument.field(path, str(exc))
    except BatchdError as exc:
        error = exc
    if error is not None:
        error.for_operation(op.id)
    return Step(i, op.id, planned, error, group=op.group)


def _dependencies(step: Step, op: batch_pb2.Operation, refs: list[Ref], steps: list[Step],
                  index_of: dict[str, int], atomic: bool) -> list[str]:
    """What ``step`` waits for: its explicit depends_on, then what it refers to, each target
    checked (it exists, it is not the step, in ATOMIC mode or in the step's group it comes
    earlier, and a referenced column is among what it returns)."""
    path = f"operations[{step.index}]"
    wanted: list[str] = []
    for j, dep in enumerate(op.depends_on):
        _check_target(dep, step, steps, index_of, atomic, f"{path}.depends_on[{j}]", op.id)
        wanted.append(dep)
    for ref in refs:
        _check_target(ref.operation, step, steps, index_of, atomic, path, op.id, ref)
        target = steps[index_of[ref.operation]].planned
        if target is not None and target.output_columns is not None \
                and ref.column not in target.output_columns:
            raise InvalidArgument.field(
                path, f'reference {ref.operation}.{ref.column}: operation "{ref.operation}" '
                      f"returns only {sorted(target.output_columns)} ({_advice(target)})",
                operation_id=op.id)
        wanted.append(ref.operation)
    return list(dict.fromkeys(wanted))


def _advice(target: Planned) -> str:
    """What to do about a reference to a column ``target`` does not return: a table operation
    returns what it is asked for; a function's result columns are what they are."""
    if isinstance(target.spec, FunctionSpec):
        f = target.spec.function
        return f"the result columns of function {f.schema}.{f.signature}"
    return "add the column to its returning / columns"


def _check_target(target: str, step: Step, steps: list[Step], index_of: dict[str, int],
                  atomic: bool, path: str, op_id: str, ref: Ref | None = None) -> None:
    at = index_of.get(target)
    if at is not None and at < step.index:  # an earlier operation: always fine
        return
    what = f"reference {ref.operation}.{ref.column}" if ref else f'dependency "{target}"'
    if target not in index_of:
        raise InvalidArgument.field(path, f'{what}: no operation "{target}" in this batch',
                                    operation_id=op_id)
    if target == step.id:
        raise InvalidArgument.field(path, f"{what}: an operation cannot depend on itself",
                                    operation_id=op_id)
    if index_of[target] < step.index:
        return
    if atomic:
        raise InvalidArgument.field(path, f'{what}: "{target}" comes later, and an atomic batch '
                                          "runs in request order", operation_id=op_id)
    if step.group and steps[index_of[target]].group == step.group:
        raise InvalidArgument.field(path, f'{what}: "{target}" comes later in group '
                                          f'"{step.group}", which runs in request order',
                                    operation_id=op_id)


def _units(steps: list[Step]) -> list[Unit]:
    """The units of an INDEPENDENT plan: a group's steps together, every other step alone;
    ordered by their first step. A unit depends on what its steps depend on outside it."""
    units: list[Unit] = []
    by_group: dict[str, Unit] = {}
    for s in steps:
        if s.group in by_group:
            by_group[s.group].steps.append(s)
            continue
        unit = Unit(len(units), s.group, [s])
        units.append(unit)
        if s.group:
            by_group[s.group] = unit
    for unit in units:
        members = {s.id for s in unit.steps}
        unit.depends_on = list(dict.fromkeys(
            d for s in unit.steps for d in s.depends_on if d not in members))
    return units


def _waits_for(units: list[Unit]) -> list[set[int]]:
    """For each unit, the units it waits for (by index)."""
    unit_of = {s.id: u.index for u in units for s in u.steps}
    return [{unit_of[d] for d in u.depends_on} for u in units]


def _reject_cycles(units: list[Unit]) -> None:
    """Kahn's algorithm over the units; whatever cannot be ordered is on (or behind) a cycle."""
    waits = _waits_for(units)
    waiting = [len(w) for w in waits]
    dependents: list[list[int]] = [[] for _ in units]
    for u, targets in enumerate(waits):
        for t in targets:
            dependents[t].append(u)
    ready = [u for u, n in enumerate(waiting) if n == 0]
    while ready:
        for d in dependents[ready.pop()]:
            waiting[d] -= 1
            if waiting[d] == 0:
                ready.append(d)
    stuck = [units[u] for u, n in enumerate(waiting) if n > 0]
    if stuck:
        raise _cycle(stuck)


def _cycle(stuck: list[Unit]) -> InvalidArgument:
    """The error naming the units on (or behind) a cycle: operations, or groups when any is."""
    first = stuck[0]
    lone = sorted(s.id for u in stuck if not u.group for s in u.steps)
    groups = sorted(u.group for u in stuck if u.group)
    if not groups:
        return InvalidArgument.field(f"operations[{first.steps[0].index}].depends_on",
                                     f"dependency cycle among operations {lone}")
    what = f"groups {groups}" + (f" and operations {lone}" if lone else "")
    field_name = "group" if first.group else "depends_on"
    return InvalidArgument.field(f"operations[{first.steps[0].index}].{field_name}",
                                 f"dependency cycle among {what}")


def unit_order(units: list[Unit]) -> list[Unit]:
    """Units in an order that respects dependencies (request order where free)."""
    waits = _waits_for(units)
    done: set[int] = set()
    order: list[Unit] = []
    pending = list(units)
    while pending:
        for u in pending:
            if waits[u.index] <= done:
                order.append(u)
                done.add(u.index)
                pending.remove(u)
                break
    return order
