"""Runs one batch plan: the promise of each mode is kept here.

ATOMIC: every operation, in request order, on one connection in one transaction. Either all of
them commit, or none: the first failure rolls everything back and ``execute`` raises that
operation's error, carrying every operation's outcome (FAILED / ROLLED_BACK / NOT_RUN; rolled
back operations show no rows, because those rows no longer exist). A serialization failure or
deadlock reruns the whole batch, up to ``atomic_retries`` more times: nothing of the failed try
was committed.

INDEPENDENT: each operation in its own transaction on a pooled connection, at most
``independent_concurrency`` at once, each starting when the operations it depends on have
succeeded, or SKIPPED when one of them did not. ``execute`` returns; each result has its own
outcome.

validate_only runs the same work and rolls it back. For INDEPENDENT batches it runs the
operations one by one in dependency order inside one transaction, each under a savepoint, so
that dependents see the rows they would see for real.

A request id (``plan.claim``) is claimed and its answer stored through batchd.batch.idempotency: in
an ATOMIC batch's own transaction (``_run_claimed``), beside an INDEPENDENT one (``Guards``).
"""

from __future__ import annotations

import asyncio
import logging
import random

import asyncpg

from batchd.batch import coalesce
from batchd.batch import results as answers
from batchd.batch.idempotency import Answer, Claim, Guards, begin, store
from batchd.batch.plan import BatchPlan, Step, topological_order
from batchd.catalog import Catalog
from batchd.config import Settings
from batchd.db.pool import connection, transaction
from batchd.errors import (
    BatchdError,
    DatabaseError,
    Skipped,
    is_final,
    translate,
)
from batchd.kinds import registry as kinds
from batchd.kinds.base import Output, RunContext
from batchd.kinds.params import Results
from batchd.v1 import batch_pb2

log = logging.getLogger(__name__)


class _Rollback(Exception):
    """Raised inside a transaction to roll it back on purpose (validate_only)."""


class _StepFailed(Exception):
    """An operation failed (``step``), or the transaction around them did (``step`` None:
    acquiring a connection, BEGIN or COMMIT)."""

    def __init__(self, step: Step | None, error: BatchdError) -> None:
        self.step = step
        self.error = error



class Executor:
    def __init__(self, pool: asyncpg.Pool, catalog: Catalog, settings: Settings) -> None:
        self.pool = pool
        self.catalog = catalog
        self.settings = settings
        self.guards = Guards(pool, settings)

    async def execute(self, plan: BatchPlan, request_id: str) -> batch_pb2.BatchExecuteResponse:
        if plan.atomic:
            return await self._atomic(plan, request_id)
        if plan.validate_only:
            return await self._independent_dry_run(plan, request_id)
        if plan.claim is not None:
            answer = await self.guards.run(plan.claim,
                                           lambda: self._independent(plan, request_id))
            if isinstance(answer, BatchdError):
                raise answer
            return answer
        return await self._independent(plan, request_id)

    # --- ATOMIC -------------------------------------------------------------------------------

    async def _atomic(self, plan: BatchPlan, request_id: str) -> batch_pb2.BatchExecuteResponse:
        if plan.invalid:
            raise answers.refused(plan)
        attempt = 0
        together = True  # runs of inserts share a statement without a savepoint (coalesce)
        while True:
            attempt += 1
            outputs: dict[str, Output] = {}
            try:
                answer = await self._atomic_once(plan, outputs, request_id, attempt, together)
            except coalesce.RunAgainApart:
                # Rolled back: the same attempt again, each operation under its savepoint
                # where they share a statement, so that a failure names its operation.
                attempt -= 1
                together = False
                continue
            except _StepFailed as failed:
                err = failed.error
                if (isinstance(err, DatabaseError) and err.retryable_whole
                        and attempt <= self.settings.atomic_retries):
                    log.info("request %s: %s, retrying the batch (attempt %d)", request_id,
                             err.reason, attempt + 1)
                    await asyncio.sleep(random.uniform(0.005, 0.02) * 2**attempt)
                    continue
                raise answers.atomic_failure(plan, outputs, failed.step, err, attempts=attempt) \
                    from None
            if isinstance(answer, BatchdError):
                raise answer
            return answer

    async def _atomic_once(self, plan: BatchPlan, outputs: dict[str, Output], request_id: str,
                           attempt: int, together: bool) -> Answer:
        """One run in one transaction: the response, or (with a request id) the error to
        raise as it is. Raises _StepFailed for what may be retried or reported as failed."""
        results = Results()
        claim = plan.claim
        try:
            async with connection(self.pool, plan.deadline) as conn:
                try:
                    # With a claim, read-only applies to the operations only (_run_claimed).
                    async with transaction(conn, self.settings, isolation=plan.isolation,
                                           readonly=plan.read_only and claim is None,
                                           deadline=plan.deadline):
                        if claim is not None:
                            answer = await begin(conn, claim,
                                                 self.settings.idempotency_ttl_seconds)
                            if answer is None:
                                answer = await self._run_claimed(plan, claim, conn, results,
                                                                 outputs, request_id, attempt,
                                                                 together)
                            return answer
                        await self._run_in_order(plan, conn, results, outputs, request_id,
                                                 protect=not together)
                        if plan.validate_only:
                            raise _Rollback
                except _Rollback:
                    return await answers.succeeded(plan.steps, outputs, committed=False,
                                                   attempts=attempt)
        except (_StepFailed, coalesce.RunAgainApart):
            raise
        except Exception as exc:
            # Acquiring, BEGIN or COMMIT failed (a failed COMMIT commits nothing), or the
            # rollback after a lost connection did: no operation to blame.
            raise _StepFailed(None, translate(exc, request_id)) from exc
        return await answers.succeeded(plan.steps, outputs, committed=True, attempts=attempt)

    async def _run_claimed(self, plan: BatchPlan, claim: Claim, conn: asyncpg.Connection,
                           results: Results, outputs: dict[str, Output], request_id: str,
                           attempt: int, together: bool) -> Answer:
        """The operations of an atomic batch whose request id is claimed, in its transaction,
        and the answer stored there too. They run under a savepoint: a final failure (see
        batchd.batch.idempotency) rolls back to it and is stored, and the transaction commits just
        that; any other failure raises and rolls back the claim with everything else. A READ
        ONLY batch is read-only under the savepoint, rolled back after the operations (they
        wrote nothing) so that the answer can be written."""
        try:
            async with conn.transaction():  # a savepoint
                if plan.read_only:
                    await conn.execute("SET LOCAL transaction_read_only = on")
                await self._run_in_order(plan, conn, results, outputs, request_id,
                                         protect=not together)
                if plan.read_only:
                    raise _Rollback
        except _Rollback:
            pass
        except _StepFailed as failed:
            if not is_final(failed.error):
                raise
            error = answers.atomic_failure(plan, outputs, failed.step, failed.error,
                                           attempts=attempt)
            await store(conn, claim, error)
            return error
        response = await answers.succeeded(plan.steps, outputs, committed=True, attempts=attempt)
        await store(conn, claim, response)
        return response

    async def _run_in_order(self, plan: BatchPlan, conn: asyncpg.Connection, results: Results,
                            outputs: dict[str, Output], request_id: str, *,
                            protect: bool = True) -> None:
        """Every step in request order; runs that can share a statement (batchd.batch.coalesce)
        as one, under a savepoint if ``protect`` (else a failure raises RunAgainApart)."""
        for group in coalesce.runs(plan.steps):
            if len(group) == 1:
                outputs[group[0].id] = await self._run_step(group[0], conn, results, request_id)
            else:
                ctx = RunContext(conn, group[0].id, results, self.catalog, self.settings)
                await coalesce.run_together(
                    group, ctx, outputs,
                    lambda step: self._run_step(step, conn, results, request_id),
                    protect=protect)

    async def _run_step(self, step: Step, conn: asyncpg.Connection, results: Results,
                        request_id: str) -> Output:
        assert step.planned is not None
        ctx = RunContext(conn, step.id, results, self.catalog, self.settings)
        try:
            output = await kinds.run(step.planned, ctx)
        except Exception as exc:
            raise _StepFailed(step, translate(exc, request_id).for_operation(step.id)) from exc
        results.record(step.id, output.rows)
        return output

    async def run_on(self, conn: asyncpg.Connection, plan: BatchPlan,
                     request_id: str) -> batch_pb2.BatchExecuteResponse:
        """Run a plan's operations in order on ``conn``, inside the transaction (or savepoint)
        the caller holds, as an atomic batch: the first failure raises the same error an
        atomic BatchExecute would, and the caller's transaction decides what commits."""
        if plan.invalid:
            raise answers.refused(plan)
        results = Results()
        outputs: dict[str, Output] = {}
        try:
            await self._run_in_order(plan, conn, results, outputs, request_id)
        except _StepFailed as failed:
            raise answers.atomic_failure(plan, outputs, failed.step, failed.error,
                                         attempts=1) from None
        return await answers.succeeded(plan.steps, outputs, committed=True, attempts=1)

    # --- INDEPENDENT --------------------------------------------------------------------------

    async def _independent(self, plan: BatchPlan,
                           request_id: str) -> batch_pb2.BatchExecuteResponse:
        limit = asyncio.Semaphore(self.settings.independent_concurrency)
        results = Results()
        outputs: dict[str, Output] = {}
        errors: dict[str, BatchdError] = {}
        finished = {s.id: asyncio.Event() for s in plan.steps}

        async def run(step: Step) -> None:
            try:
                for dep in step.depends_on:
                    await finished[dep].wait()
                    if dep not in outputs:
                        errors[step.id] = Skipped(
                            f'not run: operation "{dep}" did not succeed', operation_id=step.id)
                        return
                if step.error is not None:
                    errors[step.id] = step.error
                    return
                async with limit:
                    try:
                        async with connection(self.pool, plan.deadline) as conn, transaction(
                                conn, self.settings, isolation=plan.isolation,
                                readonly=plan.read_only, deadline=plan.deadline):
                            outputs[step.id] = await self._run_step(step, conn, results,
                                                                    request_id)
                    except _StepFailed as failed:
                        errors[step.id] = failed.error
                    except Exception as exc:  # acquire / BEGIN / COMMIT
                        errors[step.id] = translate(exc, request_id).for_operation(step.id)
            finally:
                finished[step.id].set()

        await asyncio.gather(*(run(s) for s in plan.steps))
        return await answers.independent(plan, outputs, errors, committed=bool(outputs))

    async def _independent_dry_run(self, plan: BatchPlan,
                                   request_id: str) -> batch_pb2.BatchExecuteResponse:
        results = Results()
        outputs: dict[str, Output] = {}
        errors: dict[str, BatchdError] = {}
        async with connection(self.pool, plan.deadline) as conn:
            try:
                async with transaction(conn, self.settings, isolation=plan.isolation,
                                       readonly=plan.read_only, deadline=plan.deadline):
                    for step in topological_order(plan.steps):
                        failed_dep = next((d for d in step.depends_on if d not in outputs), None)
                        if failed_dep is not None:
                            errors[step.id] = Skipped(
                                f'not run: operation "{failed_dep}" did not succeed',
                                operation_id=step.id)
                        elif step.error is not None:
                            errors[step.id] = step.error
                        else:
                            try:
                                async with conn.transaction():  # a savepoint
                                    outputs[step.id] = await self._run_step(step, conn, results,
                                                                            request_id)
                            except _StepFailed as failed:
                                errors[step.id] = failed.error
                    raise _Rollback
            except _Rollback:
                pass
        return await answers.independent(plan, outputs, errors, committed=False)
