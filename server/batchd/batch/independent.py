"""INDEPENDENT batches: every unit in its own transaction, each operation with its own outcome.

A unit (batchd.batch.plan.Unit) is the operations of a group, or one operation outside any
group. Each runs on a pooled connection in a transaction of its own, at most
``independent_concurrency`` at once, starting when every operation it depends on outside it
has succeeded; when one did not, every operation of the unit is SKIPPED, naming it.

A unit is all or nothing, like an atomic batch: its operations run in request order
(coalesced where they can share a statement, without a savepoint: when such a statement
fails, the unit runs again with its operations apart, to learn which one failed), and when
one fails the transaction rolls back and the unit reports as a failed atomic batch does
(``results.failed_unit``): that operation FAILED, the earlier ones ROLLED_BACK (no rows: those
rows no longer exist), the later ones NOT_RUN. A unit with invalid operations is refused
before it runs (they are FAILED, the others NOT_RUN). When the transaction itself fails (no
connection, BEGIN, COMMIT), every operation of the unit is FAILED with that error. A group
that meets a serialization failure or deadlock is run again whole, up to ``atomic_retries``
more times; an operation outside any group is not (its ABORTED is the client's to retry).

``committed`` is true when any unit committed; ``attempts`` is the most runs any unit took (1
when none was rerun). validate_only (``dry_run``): the units one by
one in dependency order inside one transaction that is rolled back, each under a savepoint, so
that dependents see the rows they would see for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import asyncpg

from batchd.batch import results as answers
from batchd.batch.failure import Failed, Ran, Rerun, failed_on
from batchd.batch.plan import BatchPlan, Step, Unit, unit_order
from batchd.batch.results import Settled
from batchd.batch.steps import StepRunner, attempts
from batchd.db.pool import begin, connection, decided
from batchd.errors import BatchdError, DatabaseError, Skipped, to_rpc_status
from batchd.kinds.base import Output
from batchd.kinds.params import Results
from batchd.v1 import batch_pb2

Outcome = batch_pb2.Outcome


class IndependentRun:
    """One INDEPENDENT batch: ``run`` for real, or ``dry_run`` (validate_only)."""

    def __init__(self, plan: BatchPlan, pool: asyncpg.Pool, runner: StepRunner,
                 request_id: str) -> None:
        self.plan = plan
        self.pool = pool
        self.runner = runner
        self.request_id = request_id
        # The committed (dry run: kept) operations; each unit runs in a store of its own
        # within it (``ran``), kept when its transaction commits.
        self.results: Results[Output] = Results()
        self.settled: dict[str, Settled] = {}  # every other operation's outcome and status
        self.limit = asyncio.Semaphore(runner.settings.independent_concurrency)
        self.attempts = 1  # the most runs of any unit (a group rerun after 40001 / 40P01)

    async def run(self) -> batch_pb2.BatchExecuteResponse:
        finished = {s.id: asyncio.Event() for s in self.plan.steps}

        async def run(unit: Unit) -> None:
            try:
                for dep in unit.depends_on:
                    await finished[dep].wait()
                if not self._held_back(unit):
                    await self._run_unit(unit)
            finally:
                for s in unit.steps:
                    finished[s.id].set()

        await asyncio.gather(*(run(u) for u in self.plan.units))
        return await answers.independent(self.plan, self.results.outputs, self.settled,
                                         committed=bool(self.results.outputs),
                                         attempts=self.attempts)

    async def dry_run(self) -> batch_pb2.BatchExecuteResponse:
        plan, settings = self.plan, self.runner.settings
        async with connection(self.pool, plan.deadline) as conn:
            async def units() -> None:
                for unit in unit_order(plan.units):
                    if not self._held_back(unit):
                        await self._try_unit(unit, conn)

            tx = begin(conn, settings, isolation=plan.isolation, readonly=plan.read_only,
                       deadline=plan.deadline, role=plan.role, then_release=True)
            await decided(tx, units, lambda _: False)  # rolled back: a dry run
        return await answers.independent(plan, self.results.outputs, self.settled,
                                         committed=False,
                                         attempts=1)

    def _held_back(self, unit: Unit) -> bool:
        """Whether ``unit`` must not run: SKIPPED (a dependency did not succeed) or refused
        (it has invalid operations); its outcomes are settled then."""
        failed_dep = next((d for d in unit.depends_on if d not in self.results.outputs), None)
        if failed_dep is not None:
            self._skip(unit, failed_dep)
            return True
        invalid = [s for s in unit.steps if s.error is not None]
        if invalid:
            assert invalid[0].error is not None
            self._fail(unit, {}, invalid[0], invalid[0].error, invalid)
        return bool(invalid)

    async def _run_unit(self, unit: Unit) -> None:
        """``unit`` in a transaction of its own; a group again after a serialization failure
        or deadlock, while ``atomic_retries`` allows; any unit whose cached statement was
        stale (its transaction rolled back: nothing of it stays) too."""
        ran: Results[Output] = Results(self.results)  # what the last attempt ran

        async def once(attempt: int, together: bool) -> Ran | Failed | Rerun:
            nonlocal ran
            ran = Results(self.results)
            self.attempts = max(self.attempts, attempt)
            return await self._commit_unit(unit, ran, together)

        def may_retry(failed: Failed) -> bool:
            stale = isinstance(failed.error, DatabaseError) and failed.error.stale_plan
            return bool(unit.group or stale) and self.runner.may_retry(failed.error,
                                                                      failed.attempt)

        what = f'group "{unit.group}"' if unit.group else "the operation"
        answer = await attempts(once, may_retry, what, self.request_id)
        if isinstance(answer, Failed):
            self._fail(unit, ran.outputs, answer.step, answer.error)
            return
        ran.keep()

    async def _commit_unit(self, unit: Unit, ran: Results[Output],
                           together: bool) -> Ran | Failed | Rerun:
        """One run of ``unit`` in a transaction of its own, committed when every operation
        ran."""
        plan, settings = self.plan, self.runner.settings
        try:
            async with self.limit, connection(self.pool, plan.deadline) as conn:
                tx = begin(conn, settings, isolation=plan.isolation, readonly=plan.read_only,
                           deadline=plan.deadline, role=plan.role, then_release=True)
                return await decided(
                    tx, lambda: self.runner.run_in_order(unit.steps, conn, ran, self.request_id,
                                                         protect=not together),
                    lambda answer: isinstance(answer, Ran))
        except Exception as exc:  # acquire / BEGIN / COMMIT
            return failed_on(None, exc, self.request_id)

    async def _try_unit(self, unit: Unit, conn: asyncpg.Connection) -> None:
        """``unit`` under a savepoint of the dry run's transaction."""
        ran: Results[Output] = Results(self.results)
        answer = await decided(  # a savepoint
            conn.transaction(),
            lambda: self.runner.run_in_order(unit.steps, conn, ran, self.request_id),
            lambda answer: isinstance(answer, Ran))
        if isinstance(answer, Failed):
            self._fail(unit, ran.outputs, answer.step, answer.error)
            return
        ran.keep()

    def _skip(self, unit: Unit, dependency: str) -> None:
        message = f'not run: operation "{dependency}" did not succeed'
        if unit.group:
            message += f' (group "{unit.group}" depends on it)'
        for s in unit.steps:
            self.settled[s.id] = (Outcome.OUTCOME_SKIPPED,
                                  to_rpc_status(Skipped(message, operation_id=s.id)))

    def _fail(self, unit: Unit, ran: Mapping[str, Output], failed: Step | None,
              error: BatchdError, invalid: list[Step] | None = None) -> None:
        """The outcomes of a unit whose transaction rolled back, or that was refused."""
        if failed is None:  # the transaction itself failed: so did each operation in it
            for s in unit.steps:
                error.operation_id = s.id
                self.settled[s.id] = (Outcome.OUTCOME_FAILED, to_rpc_status(error))
            return
        errors = {s.id: s.error for s in invalid or () if s.error is not None}
        errors[failed.id] = error
        self.settled.update(answers.failed_unit(unit.steps, ran, errors, failed))
