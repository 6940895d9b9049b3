"""Runs one batch plan: the promise of each mode is kept here.

ATOMIC: every operation, in request order, on one connection in one transaction. Either all of
them commit, or none: the first failure rolls everything back and ``execute`` raises that
operation's error, carrying every operation's outcome (FAILED / ROLLED_BACK / NOT_RUN; rolled
back operations show no rows, because those rows no longer exist). A serialization failure or
deadlock reruns the whole batch, up to ``atomic_retries`` more times: nothing of the failed try
was committed.

INDEPENDENT (batchd.batch.independent): each unit (a group's operations, or one operation
outside any group) in its own transaction on a pooled connection, at most
``independent_concurrency`` at once, each starting when the operations it depends on have
succeeded, or SKIPPED when one of them did not. ``execute`` returns; each result has its own
outcome.

validate_only runs the same work and rolls it back. For INDEPENDENT batches it runs the
units one by one in dependency order inside one transaction, each under a savepoint, so that
dependents see the rows they would see for real.

The operations themselves run through batchd.batch.steps (in order, coalesced where they can).

A request id (``plan.claim``) is claimed and its answer stored through batchd.batch.idempotency: in
an ATOMIC batch's own transaction (``_run_claimed``; a final failure in one of its own,
``_store_failure``), beside an INDEPENDENT one (``Guards``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from batchd.batch import results as answers
from batchd.batch.chain import Guard
from batchd.batch.failure import Failed, Ran, Rerun, failed_on
from batchd.batch.idempotency import (
    CLAIM_CTES,
    CLAIM_FLAGS,
    Answer,
    Claim,
    Guards,
    begin,
    claim_args,
    claimed_answer,
    store,
)
from batchd.batch.independent import IndependentRun
from batchd.batch.plan import BatchPlan
from batchd.batch.steps import StepRunner, attempts
from batchd.config import Settings
from batchd.db.pool import begin as begin_transaction
from batchd.db.pool import connection, decided, role_sql, transaction
from batchd.errors import BatchdError, is_final, translate
from batchd.kinds.base import Output, PlanContext
from batchd.kinds.params import Results
from batchd.v1 import batch_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _StoreApart:
    """A final failure of a batch with a request id that ran without a savepoint: its
    transaction rolls back (the claim with it), and the failure is stored in a transaction of
    its own (``Executor._store_failure``)."""

    error: BatchdError


# How one run of an atomic batch ends, before it is an answer: ``Ran`` (its transaction
# committed, or for validate_only rolled back), an ``Answer`` (with a request id: built and
# stored in the transaction, or given without running), or a failure (rolled back).
_Once = Ran | Answer | _StoreApart | Failed | Rerun


def _commits(plan: BatchPlan) -> Callable[[_Once], bool]:
    """Whether a run's transaction commits, by how it ended."""
    def keep(ended: _Once) -> bool:
        return not plan.validate_only and isinstance(
            ended, Ran | batch_pb2.BatchExecuteResponse | BatchdError)
    return keep


class Executor:
    def __init__(self, pool: asyncpg.Pool, plan_ctx: PlanContext, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings
        self.guards = Guards(pool, settings)
        self.runner = StepRunner(plan_ctx, settings)

    async def execute(self, plan: BatchPlan, request_id: str) -> batch_pb2.BatchExecuteResponse:
        """The batch's response; a failed atomic batch, or a refused one, raises its error
        (the RPC's edge turns it into the call's status)."""
        if plan.atomic:
            answer = await self._atomic(plan, request_id)
        else:
            independent = IndependentRun(plan, self.pool, self.runner, request_id)
            if plan.validate_only:
                answer = await independent.dry_run()
            elif plan.claim is not None:
                answer = await self.guards.run(plan.claim, independent.run)
            else:
                answer = await independent.run()
        if isinstance(answer, BatchdError):
            raise answer
        return answer

    # --- ATOMIC -------------------------------------------------------------------------------

    async def _atomic(self, plan: BatchPlan, request_id: str) -> Answer:
        if plan.invalid:
            return answers.refused(plan)
        results: Results[Output] = Results()  # what the attempt that ran last ran

        async def once(attempt: int, together: bool) -> Answer | Failed | Rerun:
            nonlocal results
            results = Results()
            ended = await self._atomic_once(plan, results, request_id, attempt, together)
            if isinstance(ended, _StoreApart):
                return await self._store_failure(plan, ended.error, request_id)
            if isinstance(ended, Ran):
                return await answers.succeeded(plan.steps, results.outputs,
                                               committed=not plan.validate_only,
                                               attempts=attempt)
            return ended

        answer: Answer | Failed = await attempts(
            once, lambda failed: self.runner.may_retry(failed.error, failed.attempt),
            "the batch", request_id)
        if isinstance(answer, Failed):
            return answers.atomic_failure(plan, results.outputs, answer.step, answer.error,
                                          attempts=answer.attempt)
        return answer

    async def _atomic_once(self, plan: BatchPlan, results: Results[Output], request_id: str,
                           attempt: int, together: bool) -> _Once:
        """One run in one transaction, committed or rolled back by how it ended
        (``_commits``)."""
        claim = plan.claim
        try:
            async with connection(self.pool, plan.deadline) as conn:
                async def work() -> _Once:
                    if claim is not None:
                        return await self._claimed(plan, claim, conn, results, request_id,
                                                   attempt, together)
                    return await self.runner.run_in_order(plan.steps, conn, results,
                                                          request_id, protect=not together)

                # With a claim, read-only and the role apply to the operations only
                # (_run_claimed): the answer is batchd's to write.
                tx = begin_transaction(conn, self.settings, isolation=plan.isolation,
                                       readonly=plan.read_only and claim is None,
                                       deadline=plan.deadline,
                                       role=plan.role if claim is None else None,
                                       roles_inside=plan.role is not None, then_release=True)
                return await decided(tx, work, _commits(plan))
        except Exception as exc:
            # Acquiring, BEGIN or COMMIT failed (a failed COMMIT commits nothing), or the
            # rollback after a lost connection did: no operation to blame.
            return failed_on(None, exc, request_id)

    async def _claimed(self, plan: BatchPlan, claim: Claim, conn: asyncpg.Connection,
                       results: Results[Output], request_id: str, attempt: int,
                       together: bool) -> _Once:
        """Claim the request id, then run the operations (``_run_claimed``), or answer
        without running them (the stored answer, REQUEST_IN_PROGRESS, REQUEST_ID_REUSED).
        When the operations lead with a chain of inserts run as batchd (no role, not read
        only), the claim leads that chain's statement (batchd.batch.chain.Guard): one round
        trip fewer."""
        ttl = self.settings.idempotency_ttl_seconds
        if together and not (plan.read_only or plan.role) and \
                self.runner.leads_with_chain(plan.steps):
            guard = Guard(CLAIM_CTES, claim_args(claim, ttl), "claimed", CLAIM_FLAGS)
            return await self._run_claimed(plan, claim, conn, results, request_id, attempt,
                                           together, guard)
        answer = await begin(conn, claim, ttl)
        if answer is not None:
            return answer
        return await self._run_claimed(plan, claim, conn, results, request_id, attempt,
                                       together)

    async def _run_claimed(self, plan: BatchPlan, claim: Claim, conn: asyncpg.Connection,
                           results: Results[Output], request_id: str, attempt: int,
                           together: bool, guard: Guard | None = None) -> _Once:
        """The operations of an atomic batch whose request id is claimed (or, with ``guard``,
        is claimed by their first statement), in its transaction, and the answer stored there
        too. A final failure (see batchd.batch.idempotency) is stored; any other failure rolls
        back the claim with everything else.

        Mostly the operations run as they are, and a final failure rolls the transaction back
        and is stored apart (``_StoreApart``): no savepoint, two round trips fewer. A READ ONLY
        batch, or one run as a role, runs under a savepoint: read-only, or as the role, until
        it is rolled back (READ ONLY: the operations wrote nothing) or released and the role
        set back, so that the answer can be written; a final failure rolls back to it and is
        stored, and the transaction commits just that."""
        if not (plan.read_only or plan.role):
            ran = await self.runner.run_in_order(plan.steps, conn, results, request_id,
                                                 protect=not together, guard=guard)
            if isinstance(ran, Failed) and is_final(ran.error):
                return _StoreApart(answers.atomic_failure(
                    plan, results.outputs, ran.step, ran.error, attempts=attempt))
            if not isinstance(ran, Ran):
                return ran
            if guard is not None:
                found = await claimed_answer(conn, claim, *ran.flags)
                if found is not None:  # not this call's id: nothing of the batch ran
                    return found
        else:
            async def operations() -> Ran | Failed | Rerun:
                if plan.read_only:
                    await conn.execute("SET LOCAL transaction_read_only = on")
                if plan.role:  # undone with the savepoint when it rolls back; else below
                    await conn.execute(role_sql(plan.role))
                return await self.runner.run_in_order(plan.steps, conn, results, request_id,
                                                      protect=not together)

            ran = await decided(conn.transaction(), operations,  # a savepoint
                                lambda ran: isinstance(ran, Ran) and not plan.read_only)
            if isinstance(ran, Failed) and is_final(ran.error):
                error = answers.atomic_failure(plan, results.outputs, ran.step, ran.error,
                                               attempts=attempt)
                await store(conn, claim, error)
                return error
            if not isinstance(ran, Ran):
                return ran
            if plan.role:
                await conn.execute(role_sql(None))  # the answer is batchd's to write
        response = await answers.succeeded(plan.steps, results.outputs, committed=True,
                                           attempts=attempt)
        await store(conn, claim, response)
        return response

    async def _store_failure(self, plan: BatchPlan, error: BatchdError,
                             request_id: str) -> Answer:
        """Claim the request id again and store ``error``, the final failure of a run that was
        rolled back (``_StoreApart``); the answer to give: ``error``, or what the claim finds
        if another call took the id meanwhile. Between the rollback and this claim a duplicate
        may have claimed the id: while it runs, the claim's REQUEST_IN_PROGRESS (ABORTED) is
        the answer, so that the client retries and gets the one stored answer, never a failure
        that was not stored beside another that was. Likewise if storing fails: that error
        (retryable), not the unstored failure."""
        claim = plan.claim
        assert claim is not None
        try:
            async with connection(self.pool, plan.deadline) as conn, transaction(
                    conn, self.settings, deadline=plan.deadline, then_release=True):
                answer = await begin(conn, claim, self.settings.idempotency_ttl_seconds)
                if answer is not None:
                    return answer
                await store(conn, claim, error)
        except Exception as exc:
            log.info("request %s: its final failure was not stored (%s); answering with that",
                     request_id, exc)
            return translate(exc, request_id)
        return error

    async def run_on(self, conn: asyncpg.Connection, plan: BatchPlan,
                     request_id: str) -> batch_pb2.BatchExecuteResponse:
        """Run a plan's operations in order on ``conn``, inside the transaction (or savepoint)
        the caller holds, as an atomic batch: the first failure raises the same error an
        atomic BatchExecute would, and the caller's transaction decides what commits."""
        if plan.invalid:
            raise answers.refused(plan)
        results: Results[Output] = Results()
        ran = await self.runner.run_in_order(plan.steps, conn, results, request_id)
        if isinstance(ran, Failed):
            raise answers.atomic_failure(plan, results.outputs, ran.step, ran.error,
                                         attempts=1)
        assert isinstance(ran, Ran)  # with a savepoint, coalesced runs never answer APART
        return await answers.succeeded(plan.steps, results.outputs, committed=True, attempts=1)
