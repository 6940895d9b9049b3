"""Coalescing: consecutive operations of an atomic batch that one statement can run together.

A kind says which of its operations may share a statement (``Kind.coalesce_key``: equal keys
may) and runs them (``Kind.run_together``); this module finds the runs and keeps the promise
that coalescing changes nothing a caller can see: each operation still gets its own result, and
a failure is reported on the operation it belongs to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from batchd.batch.failure import APART, Failed, Rerun
from batchd.batch.plan import Step
from batchd.db.pool import decided
from batchd.errors import BatchdError
from batchd.kinds import registry as kinds
from batchd.kinds.base import Output, RunContext


def runs(steps: Sequence[Step]) -> list[list[Step]]:
    """Steps in order, grouped: each group is one step, or a run of consecutive steps of one
    kind with equal coalescing keys, none referring to another member of the run (whose rows
    would not exist yet)."""
    groups: list[list[Step]] = []
    last_key: object = None
    members: set[str] = set()  # ids in the last group
    for step in steps:
        planned = step.planned
        key = (planned.kind, kinds.KINDS[planned.kind].coalesce_key(planned.spec)) \
            if planned is not None else None
        if (key is not None and key[1] is not None and key == last_key
                and members.isdisjoint(step.depends_on)):
            groups[-1].append(step)
        else:
            groups.append([step])
            members = set()
            last_key = key
        members.add(step.id)
    return groups


RunOne = Callable[[Step], Awaitable["Output | Failed"]]


async def run_together(group: list[Step], ctx: RunContext, run_one: RunOne, *,
                       protect: bool = True) -> Failed | Rerun | None:
    """One statement for ``group``; each operation gets its own output, recorded for the
    references of later ones. If anything fails (a value, a constraint), the error must name
    its operation: with ``protect``, the group runs under a savepoint, rolled back on failure
    and replayed one operation at a time with ``run_one`` (the first that fails is the
    answer); without (two round trips fewer, for a caller that can run the whole transaction
    again), the failure answers ``APART``."""
    planned = [s.planned for s in group if s.planned is not None]
    kind = kinds.KINDS[planned[0].kind]
    failures = (asyncpg.PostgresError, asyncpg.exceptions.DataError, BatchdError)
    specs = [p.spec for p in planned]
    try:
        if protect:
            parts = await decided(ctx.connection.transaction(),  # a savepoint
                                  lambda: kind.run_together(specs, ctx), lambda _: True)
        else:
            parts = await kind.run_together(specs, ctx)
    except failures:
        if not protect:
            return APART
        for step in group:
            answer = await run_one(step)
            if isinstance(answer, Failed):
                return answer
        return None
    for step, output in zip(group, parts, strict=True):
        ctx.results.record(step.id, output)
    return None
