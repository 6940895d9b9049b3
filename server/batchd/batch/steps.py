"""Running planned steps on a connection, inside the transaction (or savepoint) the caller
holds: one step, or several in request order, consecutive ones coalesced where one statement
can run them (batchd.batch.coalesce), and consecutive inserts that refer to each other chained
into one statement (batchd.batch.chain). Both modes use it: an atomic batch runs all its steps
so, an INDEPENDENT batch each unit's (batchd.batch.independent).

Failures are values (batchd.batch.failure): a run of steps answers ``Ran``, ``Failed`` or
``APART``.

``attempts`` is the one loop that runs a transaction again (apart, or after a serialization
failure), for an atomic batch and an INDEPENDENT unit alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from batchd.batch import chain, coalesce
from batchd.batch.failure import APART, Failed, Ran, Rerun, failed_on
from batchd.batch.plan import Step
from batchd.config import Settings
from batchd.errors import BatchdError, DatabaseError
from batchd.kinds import registry as kinds
from batchd.kinds.base import Output, PlanContext, RunContext
from batchd.kinds.params import Results

log = logging.getLogger(__name__)
_T = TypeVar("_T")


async def attempts(run: Callable[[int, bool], Awaitable[_T | Failed | Rerun]],
                   may_retry: Callable[[Failed], bool], what: str,
                   request_id: str) -> _T | Failed:
    """``run(attempt, together)`` until it answers, for a transaction that may be run again
    whole (an atomic batch, an INDEPENDENT unit): on ``APART`` (rolled back), the same attempt
    again with ``together`` False, its operations apart; on a ``Failed`` that ``may_retry``
    allows (a serialization failure, a deadlock: nothing committed), the next attempt after a
    jittered delay. Any other answer is returned, a ``Failed`` with its ``attempt`` set."""
    attempt, together = 1, True
    while True:
        answer = await run(attempt, together)
        if answer is APART:
            together = False
            continue
        if not isinstance(answer, Failed):
            return answer
        failed = dataclasses.replace(answer, attempt=attempt)
        if not may_retry(failed):
            return failed
        log.info("request %s: %s, retrying %s (attempt %d)", request_id,
                 failed.error.reason, what, attempt + 1)
        await asyncio.sleep(retry_delay(attempt))
        attempt += 1


class StepRunner:
    def __init__(self, plan_ctx: PlanContext, settings: Settings) -> None:
        self.plan_ctx = plan_ctx  # its catalog is the current one (it reloads: batchd.reload)
        self.settings = settings

    async def run_in_order(self, steps: Sequence[Step], conn: asyncpg.Connection,
                           results: Results[Output], request_id: str, *, protect: bool = True,
                           guard: chain.Guard | None = None) -> Ran | Failed | Rerun:
        """Every step in order, each output recorded in ``results`` as it completes, up to
        the first that fails; runs that share a statement (batchd.batch.coalesce) as one,
        under a savepoint if ``protect`` (else a failure of such a run answers ``APART``).
        Without ``protect``, inserts that refer to each other are chained into one statement
        too (batchd.batch.chain); with it (a batch run again to name what failed), they are
        not.

        ``guard``: the steps lead with a chain (``leads_with_chain``), which runs behind it;
        its flags are answered, and when one of them is false (the chain inserted nothing)
        nothing after it runs."""
        groups = coalesce.runs(steps)
        flags: tuple[Any, ...] = ()
        for i, group in enumerate(groups if protect else chain.runs(groups)):
            if isinstance(group, chain.Chain):
                ran = await self._run_chain(group, conn, results, request_id,
                                            guard if i == 0 else None)
                if not isinstance(ran, Ran):
                    return ran
                flags = ran.flags or flags
                if guard is not None and not all(flags):
                    return Ran(flags)
                continue
            if guard is not None and i == 0:
                raise ValueError("a guard needs steps that lead with a chain")
            answer: Output | Failed | Rerun | None
            if len(group) == 1:
                answer = await self.run_step(group[0], conn, results, request_id)
            else:
                ctx = RunContext(conn, group[0].id, results, self.plan_ctx.catalog,
                                 self.settings)
                answer = await coalesce.run_together(
                    group, ctx, lambda step: self.run_step(step, conn, results, request_id),
                    protect=protect)
            if isinstance(answer, Failed | Rerun):
                return answer
        return Ran(flags)

    @staticmethod
    def leads_with_chain(steps: Sequence[Step]) -> bool:
        """Whether ``steps``, run without ``protect``, start with a chain (which can carry a
        guard)."""
        first = next(iter(chain.runs(coalesce.runs(steps))), None)
        return isinstance(first, chain.Chain)

    async def _run_chain(self, run: chain.Chain, conn: asyncpg.Connection,
                         results: Results[Output], request_id: str,
                         guard: chain.Guard | None) -> Ran | Failed | Rerun:
        try:
            found, flags = await chain.run(run, conn, results, guard)
        except Exception as exc:
            if _names_an_operation(exc):
                return APART
            return failed_on(run.parts[0].steps[0], exc, request_id)
        for step in run.steps:
            results.record(step.id, found[step.id])
        return Ran(flags)

    async def run_step(self, step: Step, conn: asyncpg.Connection, results: Results[Output],
                       request_id: str) -> Output | Failed:
        assert step.planned is not None
        ctx = RunContext(conn, step.id, results, self.plan_ctx.catalog, self.settings)
        try:
            output = await kinds.run(step.planned, ctx)
        except Exception as exc:
            return failed_on(step, exc, request_id)
        results.record(step.id, output)
        return output

    def may_retry(self, error: BatchdError, attempt: int) -> bool:
        """Whether a transaction that failed with ``error`` on run ``attempt`` (1, 2, ...) is
        run again whole: a serialization failure or deadlock (nothing of it was committed),
        up to ``atomic_retries`` more times."""
        return (isinstance(error, DatabaseError) and error.retryable_whole
                and attempt <= self.settings.atomic_retries)


# SQLSTATE classes of errors that are not about what a statement holds: a transaction
# rollback (serialization failure, deadlock), operator intervention (a timeout, a shutdown),
# insufficient resources, a lost connection, system errors.
_NOT_AN_OPERATIONS = ("40", "57", "53", "08", "58", "XX")


def _names_an_operation(exc: BaseException) -> bool:
    """Whether a failed chain must run again apart to learn which operation ``exc`` is
    about: a value or constraint, a privilege, a reference; not a failure of the transaction
    or the server."""
    if isinstance(exc, BatchdError | asyncpg.exceptions.DataError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "XX")[:2] not in _NOT_AN_OPERATIONS
    return False


def retry_delay(attempt: int) -> float:
    """Seconds to wait before rerunning a transaction whole after run ``attempt``: jittered,
    doubling."""
    return random.uniform(0.005, 0.02) * float(2**attempt)
