"""The error vocabulary batchd's server and its clients share: the error tree, the codes, the
reasons, and ``google.rpc.Status`` both ways. Part of the ``batchd-client`` distribution, with
the generated contract (``batchd.v1``), so that a client needs no server to speak it; the server
imports it from here (``batchd.errors`` re-exports it beside the database's mapping).

    BatchdError              code + reason + message, field violations, ErrorInfo metadata
     ├── InvalidArgument      INVALID_ARGUMENT: the request is malformed; BadRequest violations
     ├── NotFound             NOT_FOUND: a keyed row does not exist
     ├── OutOfRange           OUT_OF_RANGE: a result beyond a server limit (a function's rows)
     ├── VersionConflict      ABORTED: optimistic locking, the row's version is not the expected
     ├── RequestInProgress    ABORTED: another call with the same request id is running
     ├── FailedPrecondition   FAILED_PRECONDITION: the system is not in the state the request needs
     │    ├── RequestIdReused     a request id already used for a different request
     │    └── SequenceOutOfOrder  a stream chunk whose sequence is not the next one
     ├── DependencyFailed     FAILED_PRECONDITION: a referenced row is missing at run time
     │    └── Skipped         an operation this one depends on did not succeed (INDEPENDENT)
     ├── Unauthenticated      UNAUTHENTICATED: no valid credentials
     ├── PermissionDenied     PERMISSION_DENIED: the caller's scopes do not cover an operation
     ├── DeadlineExceeded     DEADLINE_EXCEEDED: the caller's deadline, a stream's maximum duration
     ├── Unavailable          UNAVAILABLE: the database is unreachable, or this server is draining
     ├── Overloaded           RESOURCE_EXHAUSTED with RetryInfo: too much work at once
     ├── DatabaseError        (batchd.errors, server) PostgreSQL refused: code by SQLSTATE
     ├── Internal             INTERNAL: a bug in batchd; a request id, no internals
     └── BatchdRpcError       the client's view: a ``google.rpc.Status`` the server sent, rebuilt
          └── AtomicBatchError   (batchd.client) with every operation's outcome

One function turns them into a ``google.rpc.Status`` with details (``to_rpc_status``), and one
turns a status back (``from_rpc_status``: a stored answer replayed, or what a client received;
``from_rpc_error`` for a failed call as grpc raises it).
``reasons`` names every reason batchd itself sends, as constants and in ``REASONS`` with its
code (the docs' error table is ``markdown_table()``); ``sqlstates`` is the one map of
PostgreSQL's SQLSTATEs to codes; ``FINAL_CODES`` / ``is_refusal`` say which failures are the
answer and which may pass. Nothing here imports asyncpg or any server module: the server's
translation of foreign exceptions (``translate``, ``from_database``) is ``batchd.errors``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from batchd.vocabulary import reasons as _r

DOMAIN = "batchd"
_S = grpc.StatusCode
_M = TypeVar("_M", bound=Message)


class FieldViolation(NamedTuple):
    """One invalid field: a path like ``operations[2].insert.rows[0].price``, and why."""

    field: str
    description: str


class BatchdError(Exception):
    """An error the caller should see, with its gRPC status code and ErrorInfo reason."""

    code: grpc.StatusCode = _S.UNKNOWN
    reason: str = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        violations: Iterable[FieldViolation] = (),
        metadata: dict[str, str] | None = None,
        operation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if reason is not None:
            self.reason = reason
        self.violations = list(violations)
        self.metadata = dict(metadata or {})
        self.operation_id = operation_id
        self.extra_details: list[Message] = []

    def for_operation(self, operation_id: str) -> BatchdError:
        """Attribute the error to an operation (kept if already attributed)."""
        if self.operation_id is None:
            self.operation_id = operation_id
        return self

    @property
    def full_message(self) -> str:
        if self.operation_id is None:
            return self.message
        return f'operation "{self.operation_id}": {self.message}'

    @property
    def error_info(self) -> dict[str, str]:
        """The ErrorInfo metadata (sqlstate, constraint, table, operation_id, ...)."""
        return self.metadata

    @property
    def field_violations(self) -> list[FieldViolation]:
        return self.violations

    def detail(self, kind: type[_M]) -> _M | None:
        """The first extra detail of type ``kind`` (packed or not), or None."""
        for extra in self.extra_details:
            if isinstance(extra, kind):
                return extra
            if isinstance(extra, any_pb2.Any) and extra.Is(kind.DESCRIPTOR):  # type: ignore[arg-type]
                unpacked = kind()
                extra.Unpack(unpacked)
                return unpacked
        return None


class InvalidArgument(BatchdError):
    code = _S.INVALID_ARGUMENT
    reason = _r.INVALID_ARGUMENT

    @classmethod
    def field(cls, field: str, description: str, **kwargs: object) -> InvalidArgument:
        """The common case: one field is wrong, and the message says which."""
        return cls(f"{field}: {description}", violations=[FieldViolation(field, description)],
                   **kwargs)  # type: ignore[arg-type]


class NotFound(BatchdError):
    code = _S.NOT_FOUND
    reason = _r.NOT_FOUND


class OutOfRange(BatchdError):
    """A result larger than a server limit allows (a SQL function's rows past max_page_size):
    the caller must ask for less, so the same request fails the same way again."""

    code = _S.OUT_OF_RANGE
    reason = _r.TOO_MANY_ROWS


class VersionConflict(BatchdError):
    code = _S.ABORTED
    reason = _r.VERSION_CONFLICT


class RequestInProgress(BatchdError):
    """Another call with the same request id has not finished: retry later, and get its
    answer (see batchd.batch.idempotency)."""

    code = _S.ABORTED
    reason = _r.REQUEST_IN_PROGRESS


class FailedPrecondition(BatchdError):
    code = _S.FAILED_PRECONDITION
    reason = _r.FAILED_PRECONDITION


class RequestIdReused(FailedPrecondition):
    """The request id was already used for a different request."""

    reason = _r.REQUEST_ID_REUSED


class SequenceOutOfOrder(FailedPrecondition):
    """A stream chunk whose sequence is not the next one (see batchd.stream.ledger)."""

    reason = _r.SEQUENCE_OUT_OF_ORDER

    def __init__(self, sequence: int, expected: int) -> None:
        super().__init__(f"chunk sequence {sequence} is out of order; expected {expected}",
                         metadata={"expected_sequence": str(expected)})


class DependencyFailed(BatchdError):
    code = _S.FAILED_PRECONDITION
    reason = _r.DEPENDENCY_FAILED


class Skipped(DependencyFailed):
    reason = _r.DEPENDENCY_NOT_SUCCEEDED


class Unauthenticated(BatchdError):
    """No valid credentials; raised by batchd.rpc.auth before any handler runs."""

    code = _S.UNAUTHENTICATED
    reason = _r.UNAUTHENTICATED


class PermissionDenied(BatchdError):
    """An authenticated caller whose scopes do not cover an operation (see batchd.principals)."""

    code = _S.PERMISSION_DENIED
    reason = _r.PERMISSION_DENIED


class DeadlineExceeded(BatchdError):
    code = _S.DEADLINE_EXCEEDED
    reason = _r.DEADLINE_EXCEEDED


class Unavailable(BatchdError):
    """Retryable as it is, here or on another replica: nothing of the call was committed."""

    code = _S.UNAVAILABLE
    reason = _r.DATABASE_UNAVAILABLE


class Overloaded(BatchdError):
    code = _S.RESOURCE_EXHAUSTED
    reason = _r.TOO_MANY_CONCURRENT


class Internal(BatchdError):
    """The caller's view of a bug: no internals, a request id to find it in the log."""

    code = _S.INTERNAL
    reason = _r.INTERNAL

    def __init__(self, request_id: str) -> None:
        super().__init__(f"internal error; see the server log for request id {request_id}",
                         metadata={"request_id": request_id})


def retry_later(error: BatchdError, seconds: int) -> BatchdError:
    """``error`` with a RetryInfo detail: when the caller may try again."""
    error.extra_details.append(error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=seconds)))
    return error


# The codes of a failed atomic batch that are its final answer: the same request would fail
# the same way again from the state it met. Others say "try again", and a retry should run.
FINAL_CODES = frozenset({
    _S.INVALID_ARGUMENT, _S.NOT_FOUND, _S.ALREADY_EXISTS, _S.FAILED_PRECONDITION,
    _S.PERMISSION_DENIED, _S.OUT_OF_RANGE,
})


def is_final(error: BatchdError) -> bool:
    """Whether ``error`` is the final answer to its request (stored for a request id)."""
    return error.code in FINAL_CODES


def is_refusal(code: grpc.StatusCode) -> bool:
    """Whether a call that failed with ``code`` was refused for what it asked or who asked:
    the same call fails the same way until the request, its credentials or the server's
    settings change. Any other failure passes (unavailable, overloaded, a deadline, a bug):
    the same call later may succeed (``batchd ingest`` then says to run it again)."""
    return code in FINAL_CODES or code in (_S.UNAUTHENTICATED, _S.UNIMPLEMENTED)


# The rest of the package, re-exported: ``from batchd.vocabulary import ...`` is the one import.
__all__ = [
    "BY_CLASS", "BY_SQLSTATE", "DOMAIN", "FINAL_CODES", "OK_STATUS", "REASONS", "BatchdError",
    "BatchdRpcError", "DeadlineExceeded", "DependencyFailed", "FailedPrecondition",
    "FieldViolation", "Internal", "InvalidArgument", "NotFound", "OutOfRange", "Overloaded",
    "PermissionDenied", "Reason", "RequestIdReused", "RequestInProgress", "SequenceOutOfOrder",
    "Skipped", "Unauthenticated", "Unavailable", "VersionConflict", "broken_contract",
    "cancelled_code", "code_of", "from_cut_stream", "from_rpc_error", "from_rpc_status",
    "is_final", "is_refusal", "markdown_table", "not_committed", "reasons", "retry_later",
    "to_rpc_status",
]
from batchd.vocabulary import reasons  # noqa: E402
from batchd.vocabulary.reasons import REASONS, Reason, markdown_table  # noqa: E402
from batchd.vocabulary.sqlstates import BY_CLASS, BY_SQLSTATE  # noqa: E402
from batchd.vocabulary.status import (  # noqa: E402
    OK_STATUS,
    BatchdRpcError,
    broken_contract,
    cancelled_code,
    code_of,
    from_cut_stream,
    from_rpc_error,
    from_rpc_status,
    not_committed,
    to_rpc_status,
)
