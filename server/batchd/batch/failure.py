"""Failures as values: how a run of operations ends, for the executor to decide on.

What the driver raises is translated where the statement ran (``failed_on``), and from there
up to the RPC's edge a failure is a value that each layer looks at, never an exception that
jumps over them. A run of steps (batchd.batch.steps) ends in one of

    Ran(flags)   every step ran, its output recorded in the results store;
    Failed       an operation failed (``step``), or the transaction around them did (None);
    APART        a statement that operations shared failed without a savepoint: the
                 transaction is aborted, and must run again with its operations apart to
                 learn which one failed (batchd.batch.coalesce, batchd.batch.chain).

Whether a transaction commits is decided by the value too (batchd.db.pool.decided).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from batchd.batch.plan import Step
from batchd.errors import BatchdError, translate


@dataclass(frozen=True, slots=True)
class Failed:
    """An operation failed (``step``), or the transaction around them did (``step`` None:
    acquiring a connection, BEGIN or COMMIT). ``attempt``: the run it failed in (set by
    ``attempts``)."""

    step: Step | None
    error: BatchdError
    attempt: int = 1


class Rerun(enum.Enum):
    """A shared statement failed without a savepoint (coalesce, chain): run the transaction
    again, its operations apart."""

    APART = "apart"


APART = Rerun.APART


@dataclass(frozen=True, slots=True)
class Ran:
    """Every step ran. ``flags``: a guard's (``StepRunner.run_in_order``)."""

    flags: tuple[Any, ...] = ()


def failed_on(step: Step | None, exc: BaseException, request_id: str) -> Failed:
    """``exc``, raised by ``step``'s statement (or the transaction's, None), as a value."""
    error = translate(exc, request_id)
    return Failed(step, error.for_operation(step.id) if step is not None else error)
