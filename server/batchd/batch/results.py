"""The answer to a batch: results in request order, each with its outcome and status.

``succeeded``: every operation SUCCEEDED (an atomic batch that committed, or was validated).
``independent``: each operation's own outcome (SUCCEEDED, FAILED, SKIPPED; in a failed group
also ROLLED_BACK and NOT_RUN).
``atomic_failure``: the RPC error of a failed atomic batch, the failing operation's status
with every operation's outcome in its details (``failed_unit``: FAILED; ROLLED_BACK without
rows, since those rows no longer exist; NOT_RUN). A failed group of an INDEPENDENT batch
reports its operations the same way (``failed_unit``).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from typing import Any, TypeVar

from google.rpc import status_pb2

from batchd import offload
from batchd.batch.plan import BatchPlan, Step
from batchd.errors import OK_STATUS, BatchdError, not_committed, to_rpc_status
from batchd.kinds.base import Output
from batchd.v1 import batch_pb2

Outcome = batch_pb2.Outcome
# The enum's attribute lookup is Python code: once, not per result.
SUCCEEDED = Outcome.OUTCOME_SUCCEEDED
_T = TypeVar("_T")
# The outcome and status of an operation that did not succeed.
Settled = tuple[int, status_pb2.Status]


def add_result(response: batch_pb2.BatchExecuteResponse, step: Step, outcome: Any,
               status: status_pb2.Status, output: Output | None = None) -> None:
    """Append a step's result to ``response``, built in place (a result built apart and then
    passed in would be copied, once per operation)."""
    result = response.results.add(id=step.id, outcome=outcome)
    if status is not OK_STATUS and status.code:  # unset reads as OK: no copy when it is
        result.status.CopyFrom(status)
    if output is not None:
        output.write_rows(result)
        result.rows_affected = output.rows_affected
        if output.next_page_token:
            result.next_page_token = output.next_page_token
        if output.total_count is not None:
            result.total_count = output.total_count


# Rows of results past which a response is built on a worker thread: building tens of
# thousands of Structs takes long enough to stall every other call on the event loop.
OFF_LOOP_ROWS = 2000


async def _built(outputs: dict[str, Output], build: Callable[..., _T], *args: Any,
                 **kwargs: Any) -> _T:
    if sum(len(o.rows) for o in outputs.values()) < OFF_LOOP_ROWS:
        return build(*args, **kwargs)
    return await offload.run(build, *args, **kwargs)


async def succeeded(steps: Sequence[Step], outputs: dict[str, Output], *, committed: bool,
                    attempts: int) -> batch_pb2.BatchExecuteResponse:
    """Every operation SUCCEEDED (built off the event loop when large)."""
    return await _built(outputs, _succeeded, steps, outputs, committed, attempts)


async def independent(plan: BatchPlan, outputs: dict[str, Output],
                      settled: dict[str, Settled], committed: bool,
                      attempts: int) -> batch_pb2.BatchExecuteResponse:
    """Each operation's own outcome: SUCCEEDED with its output, or as ``settled`` (built off
    the event loop when large). ``attempts``: the most runs any unit took."""
    return await _built(outputs, _independent, plan, outputs, settled, committed, attempts)


def _succeeded(steps: Sequence[Step], outputs: dict[str, Output], committed: bool,
               attempts: int) -> batch_pb2.BatchExecuteResponse:
    response = batch_pb2.BatchExecuteResponse(committed=committed, attempts=attempts)
    for s in steps:
        add_result(response, s, SUCCEEDED, OK_STATUS, outputs[s.id])
    return response


def _independent(plan: BatchPlan, outputs: dict[str, Output], settled: dict[str, Settled],
                 committed: bool, attempts: int) -> batch_pb2.BatchExecuteResponse:
    response = batch_pb2.BatchExecuteResponse(committed=committed, attempts=attempts)
    for s in plan.steps:
        if s.id in outputs:
            add_result(response, s, SUCCEEDED, OK_STATUS, outputs[s.id])
        else:
            add_result(response, s, *settled[s.id])
    return response


def failed_unit(steps: Sequence[Step], ran: Container[str], errors: Mapping[str, BatchdError],
                failed: Step | None) -> dict[str, Settled]:
    """The outcomes of operations that ran as one transaction, which failed (an atomic batch,
    a group): FAILED with their error (``errors``), ROLLED_BACK if they ran (without rows:
    those rows no longer exist), NOT_RUN otherwise. ``failed``: the operation that failed it
    (None: the transaction did)."""
    cause = f'operation "{failed.id}" failed' if failed else "the transaction failed"
    settled: dict[str, Settled] = {}
    for s in steps:
        if s.id in errors:
            settled[s.id] = (Outcome.OUTCOME_FAILED, to_rpc_status(errors[s.id]))
        elif s.id in ran:
            settled[s.id] = (Outcome.OUTCOME_ROLLED_BACK, not_committed(f"rolled back: {cause}"))
        else:
            settled[s.id] = (Outcome.OUTCOME_NOT_RUN, not_committed(f"not run: {cause}"))
    return settled


def refused(plan: BatchPlan) -> BatchdError:
    """The RPC error of an atomic batch with invalid operations: refused before anything ran,
    naming every invalid operation."""
    first = plan.invalid[0]
    assert first.error is not None
    return atomic_failure(plan, {}, first, first.error, attempts=0, invalid=plan.invalid)


def atomic_failure(plan: BatchPlan, outputs: dict[str, Output], failed: Step | None,
                   error: BatchdError, *, attempts: int,
                   invalid: Sequence[Step] = ()) -> BatchdError:
    """The RPC error of a failed atomic batch: the failing operation's status, with every
    operation's outcome in the details."""
    errors = {s.id: s.error for s in invalid if s.error is not None}
    if failed is not None:
        errors[failed.id] = error
    outcomes = batch_pb2.BatchExecuteResponse(committed=False, attempts=attempts)
    settled = failed_unit(plan.steps, outputs, errors, failed)
    for s in plan.steps:
        add_result(outcomes, s, *settled[s.id])
    metadata = dict(error.metadata)
    if failed is not None:
        metadata["operation_id"] = failed.id
    # Refused before anything ran (invalid operations: attempts 0), or rolled back.
    what = "nothing of the batch ran" if attempts == 0 else "the batch was rolled back"
    batch_error = BatchdError(
        f"{error.full_message}; {what}", code=error.code,
        reason=error.reason, violations=error.violations, metadata=metadata)
    batch_error.extra_details.append(outcomes)
    return batch_error
