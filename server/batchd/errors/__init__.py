"""Errors: the one place that decides every status code and every ErrorInfo reason, for the
server and the Python client alike.

    BatchdError              code + reason + message, field violations, ErrorInfo metadata
     ├── InvalidArgument      INVALID_ARGUMENT: the request is malformed; BadRequest violations
     ├── NotFound             NOT_FOUND: a keyed row does not exist
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
     ├── DatabaseError        PostgreSQL refused: code by SQLSTATE; carries constraint, table, ...
     ├── Internal             INTERNAL: a bug in batchd; a request id, no internals
     └── BatchdRpcError       the client's view: a ``google.rpc.Status`` the server sent, rebuilt
          └── AtomicBatchError   (batchd.client) with every operation's outcome

One function turns foreign exceptions into these (``translate``: ours as they are, asyncpg's
through ``from_database``, most specific SQLSTATE first, then its class; anything else is a bug,
logged, and INTERNAL for the caller). One function turns them into a ``google.rpc.Status`` with
details (``to_rpc_status``), and one turns a status back (``from_rpc_status``: a stored answer
replayed, or what a client received). ``REASONS`` lists every reason batchd itself sends, with
its code; the README's error table is ``markdown_table()`` (tests/unit/test_errors.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import NamedTuple, TypeVar

import asyncpg
import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "batchd"
log = logging.getLogger(__name__)
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
    reason = "INVALID_ARGUMENT"

    @classmethod
    def field(cls, field: str, description: str, **kwargs: object) -> InvalidArgument:
        """The common case: one field is wrong, and the message says which."""
        return cls(f"{field}: {description}", violations=[FieldViolation(field, description)],
                   **kwargs)  # type: ignore[arg-type]


class NotFound(BatchdError):
    code = _S.NOT_FOUND
    reason = "NOT_FOUND"


class VersionConflict(BatchdError):
    code = _S.ABORTED
    reason = "VERSION_CONFLICT"


class RequestInProgress(BatchdError):
    """Another call with the same request id has not finished: retry later, and get its
    answer (see batchd.batch.idempotency)."""

    code = _S.ABORTED
    reason = "REQUEST_IN_PROGRESS"


class FailedPrecondition(BatchdError):
    code = _S.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class RequestIdReused(FailedPrecondition):
    """The request id was already used for a different request."""

    reason = "REQUEST_ID_REUSED"


class SequenceOutOfOrder(FailedPrecondition):
    """A stream chunk whose sequence is not the next one (see batchd.stream.ledger)."""

    reason = "SEQUENCE_OUT_OF_ORDER"

    def __init__(self, sequence: int, expected: int) -> None:
        super().__init__(f"chunk sequence {sequence} is out of order; expected {expected}",
                         metadata={"expected_sequence": str(expected)})


class DependencyFailed(BatchdError):
    code = _S.FAILED_PRECONDITION
    reason = "DEPENDENCY_FAILED"


class Skipped(DependencyFailed):
    reason = "DEPENDENCY_NOT_SUCCEEDED"


class Unauthenticated(BatchdError):
    """No valid credentials; raised by batchd.auth before any handler runs."""

    code = _S.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(BatchdError):
    """An authenticated caller whose scopes do not cover an operation (see batchd.auth)."""

    code = _S.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class DeadlineExceeded(BatchdError):
    code = _S.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class Unavailable(BatchdError):
    """Retryable as it is, here or on another replica: nothing of the call was committed."""

    code = _S.UNAVAILABLE
    reason = "DATABASE_UNAVAILABLE"


class Overloaded(BatchdError):
    code = _S.RESOURCE_EXHAUSTED
    reason = "TOO_MANY_CONCURRENT"


class Internal(BatchdError):
    """The caller's view of a bug: no internals, a request id to find it in the log."""

    code = _S.INTERNAL
    reason = "INTERNAL"

    def __init__(self, request_id: str) -> None:
        super().__init__(f"internal error; see the server log for request id {request_id}",
                         metadata={"request_id": request_id})


def retry_later(error: BatchdError, seconds: int) -> BatchdError:
    """``error`` with a RetryInfo detail: when the caller may try again."""
    error.extra_details.append(error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=seconds)))
    return error


# --- PostgreSQL -------------------------------------------------------------------------------

class DatabaseError(BatchdError):
    """PostgreSQL refused the work; ``sqlstate`` says how (and whether a retry may help)."""

    def __init__(self, message: str, *, sqlstate: str, code: grpc.StatusCode, reason: str,
                 metadata: dict[str, str]) -> None:
        super().__init__(message, code=code, reason=reason, metadata=metadata)
        self.sqlstate = sqlstate

    @property
    def retryable_whole(self) -> bool:
        """Serialization failure or deadlock: nothing was committed, so a rerun is safe."""
        return self.sqlstate in ("40001", "40P01")


# Exact SQLSTATEs first, then their two-character class. Comments say why when not obvious.
BY_SQLSTATE: dict[str, grpc.StatusCode] = {
    "23505": _S.ALREADY_EXISTS,  # unique_violation
    "23503": _S.FAILED_PRECONDITION,  # foreign_key_violation: the referenced row is missing
    "23502": _S.INVALID_ARGUMENT,  # not_null_violation
    "23514": _S.INVALID_ARGUMENT,  # check_violation
    "23P01": _S.FAILED_PRECONDITION,  # exclusion_violation
    "40001": _S.ABORTED,  # serialization_failure: retry the transaction
    "40P01": _S.ABORTED,  # deadlock_detected: retry the transaction
    "55P03": _S.ABORTED,  # lock_not_available (lock_timeout): retryable contention
    "57014": _S.DEADLINE_EXCEEDED,  # query_canceled (statement_timeout)
    "25006": _S.FAILED_PRECONDITION,  # read_only_sql_transaction
    "42501": _S.PERMISSION_DENIED,  # insufficient_privilege
    "P0001": _S.FAILED_PRECONDITION,  # raise_exception: a trigger's business rule
    "57P01": _S.UNAVAILABLE,  # admin_shutdown
    "57P02": _S.UNAVAILABLE,  # crash_shutdown
    "57P03": _S.UNAVAILABLE,  # cannot_connect_now
}
BY_CLASS: dict[str, grpc.StatusCode] = {
    "08": _S.UNAVAILABLE,  # connection exception
    "21": _S.INVALID_ARGUMENT,  # cardinality violation: e.g. an upsert naming one key twice
    "22": _S.INVALID_ARGUMENT,  # data exception
    "23": _S.FAILED_PRECONDITION,  # other integrity constraint violations
    "40": _S.ABORTED,  # transaction rollback
    "42": _S.INVALID_ARGUMENT,  # syntax error or access rule violation
    "53": _S.RESOURCE_EXHAUSTED,  # insufficient resources
    "54": _S.INVALID_ARGUMENT,  # program limit exceeded (e.g. a too-large value)
    "0A": _S.INVALID_ARGUMENT,  # feature not supported
}


def _reason(exc: BaseException) -> str:
    """``UniqueViolationError`` -> ``UNIQUE_VIOLATION``; ``ReadOnlySQLTransactionError`` ->
    ``READ_ONLY_SQL_TRANSACTION`` (a run of capitals is one word)."""
    name = type(exc).__name__.removesuffix("Error")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).upper()


def from_database(exc: BaseException) -> BatchdError | None:
    """Translate an exception raised while talking to PostgreSQL into a ``BatchdError``.

    Only the driver's and the connection's exceptions are translated; for anything else this
    returns None, because anything else is a bug in batchd.
    """
    # The driver raises some PostgresError classes itself (no severity: PostgreSQL sent
    # nothing): a value it cannot encode, a connection closed under an operation.
    driver = isinstance(exc, asyncpg.PostgresError) and not getattr(exc, "severity", None)
    if driver and isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError):
        return Unavailable(f"database unavailable: {exc}")
    if driver and type(exc) is asyncpg.exceptions.DataError:
        return InvalidArgument(f"invalid value: {exc}", reason="INVALID_VALUE")
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate or ""
        code = BY_SQLSTATE.get(sqlstate) or BY_CLASS.get(sqlstate[:2], _S.UNKNOWN)
        metadata = {"sqlstate": sqlstate}
        for key in ("schema_name", "table_name", "column_name", "constraint_name", "detail"):
            value = getattr(exc, key, None)
            if value:
                metadata[key.removesuffix("_name")] = str(value)
        message = exc.message or str(exc)
        if getattr(exc, "detail", None):
            message = f"{message} ({exc.detail})"
        return DatabaseError(message, sqlstate=sqlstate, code=code, reason=_reason(exc),
                             metadata=metadata)
    if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one
        return DeadlineExceeded("database did not answer in time", reason="DATABASE_TIMEOUT")
    if isinstance(exc, ConnectionError | OSError | asyncpg.exceptions.InterfaceError):
        return Unavailable(f"database unavailable: {exc}")
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # Seen when PostgreSQL terminates an idle pooled connection: asyncpg has read the
        # server's FATAL message but not yet the socket's close, and refuses the next query.
        # Retryable like any lost connection; logged, since misuse of a connection looks alike.
        log.warning("database connection unusable", exc_info=exc)
        return Unavailable("database connection lost; retry")
    return None


def translate(exc: BaseException, request_id: str) -> BatchdError:
    """Any exception as the error its caller sees: ours as they are, the database's mapped,
    anything else a bug (logged with its traceback; INTERNAL with the request id)."""
    if isinstance(exc, BatchdError):
        return exc
    mapped = from_database(exc)
    if mapped is not None:
        return mapped
    log.error("unexpected error in request %s", request_id, exc_info=exc)
    return Internal(request_id)


# The codes of a failed atomic batch that are its final answer: the same request would fail
# the same way again from the state it met. Others say "try again", and a retry should run.
FINAL_CODES = frozenset({
    _S.INVALID_ARGUMENT, _S.NOT_FOUND, _S.ALREADY_EXISTS, _S.FAILED_PRECONDITION,
    _S.PERMISSION_DENIED, _S.OUT_OF_RANGE,
})


def is_final(error: BatchdError) -> bool:
    """Whether ``error`` is the final answer to its request (stored for a request id)."""
    return error.code in FINAL_CODES


# --- google.rpc.Status ------------------------------------------------------------------------

_CODES = {c.value[0]: c for c in grpc.StatusCode}


def code_of(number: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of a ``google.rpc.Code`` number (UNKNOWN if there is none)."""
    return _CODES.get(number, _S.UNKNOWN)


def _pack(message: Message) -> any_pb2.Any:
    if isinstance(message, any_pb2.Any):  # packed already (from_rpc_status keeps it so)
        return message
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_rpc_status(err: BatchdError) -> status_pb2.Status:
    """The ``google.rpc.Status`` the caller sees: code, message, ErrorInfo, BadRequest, extras."""
    metadata = dict(err.metadata)
    if err.operation_id is not None:
        metadata["operation_id"] = err.operation_id
    details = [_pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN,
                                                 metadata=metadata))]
    if err.violations:
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in err.violations
        ])))
    details.extend(_pack(extra) for extra in err.extra_details)
    return status_pb2.Status(code=err.code.value[0], message=err.full_message, details=details)


class BatchdRpcError(BatchdError):
    """A ``google.rpc.Status`` as an error: what a client received, or a stored answer
    replayed. ``code`` is a ``grpc.StatusCode``; ``reason``, ``error_info`` and
    ``field_violations`` come from the status details, when the server sent any; other details
    stay in ``extra_details`` (see ``detail``). ``to_rpc_status`` gives the status back."""

    def __init__(self, code: grpc.StatusCode, message: str, *, reason: str = "",
                 error_info: dict[str, str] | None = None,
                 field_violations: Iterable[FieldViolation] = ()) -> None:
        super().__init__(message, code=code, reason=reason, violations=field_violations,
                         metadata=error_info)
        self.operation_id = self.metadata.get("operation_id")

    @property
    def full_message(self) -> str:
        return self.message  # as sent: it already names its operation

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def from_rpc_status(status: status_pb2.Status) -> BatchdRpcError:
    """The error a ``google.rpc.Status`` stands for (the inverse of ``to_rpc_status``)."""
    error = BatchdRpcError(code_of(status.code), status.message)
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            error.reason = info.reason
            error.metadata = dict(info.metadata)
            error.operation_id = error.metadata.get("operation_id")
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            error.violations = [FieldViolation(v.field, v.description)
                                for v in bad.field_violations]
        else:
            error.extra_details.append(packed)
    return error


OK_STATUS = status_pb2.Status(code=0, message="")


def not_committed(message: str) -> status_pb2.Status:
    """The status of an operation of a failed atomic batch that did not fail itself (ROLLED_BACK
    or NOT_RUN): ABORTED, since the same batch may well succeed when run again."""
    return status_pb2.Status(code=_S.ABORTED.value[0], message=message)


# --- the table of reasons ---------------------------------------------------------------------

class Reason(NamedTuple):
    reason: str
    code: grpc.StatusCode
    when: str


# Every ErrorInfo reason batchd sends, besides DatabaseError's, which are named after
# asyncpg's exception class for the SQLSTATE (UNIQUE_VIOLATION, FOREIGN_KEY_VIOLATION, ...)
# and coded by BY_SQLSTATE / BY_CLASS. Custom handlers may send reasons of their own.
REASONS: tuple[Reason, ...] = (
    Reason("INVALID_ARGUMENT", _S.INVALID_ARGUMENT, "malformed request: unknown table or "
           "column, wrong value type, bad operation id, unknown reference, cycle, limits"),
    Reason("INVALID_VALUE", _S.INVALID_ARGUMENT, "the driver cannot encode a value for its "
           "column type"),
    Reason("NOT_FOUND", _S.NOT_FOUND, "`get`, keyed `update`/`delete` of a row that does not "
           "exist"),
    Reason("VERSION_CONFLICT", _S.ABORTED, "optimistic locking: the row's version is not "
           "`expected_version`"),
    Reason("REQUEST_IN_PROGRESS", _S.ABORTED, "a call with the same `request_id` is still "
           "running: retry"),
    Reason("FAILED_PRECONDITION", _S.FAILED_PRECONDITION, "an atomic stream ended without "
           "its commit message; a stream id opened for another table"),
    Reason("REQUEST_ID_REUSED", _S.FAILED_PRECONDITION, "a `request_id` already used for a "
           "different request"),
    Reason("SEQUENCE_OUT_OF_ORDER", _S.FAILED_PRECONDITION, "a stream chunk whose sequence "
           "is not the next one"),
    Reason("DEPENDENCY_FAILED", _S.FAILED_PRECONDITION, "a referenced row is missing at run "
           "time"),
    Reason("DEPENDENCY_NOT_SUCCEEDED", _S.FAILED_PRECONDITION, "SKIPPED: an operation this "
           "one depends on did not succeed"),
    Reason("UNAUTHENTICATED", _S.UNAUTHENTICATED, "no valid credentials"),
    Reason("MISSING_TOKEN", _S.UNAUTHENTICATED, "authentication is on and the call has no "
           "credentials"),
    Reason("MALFORMED_TOKEN", _S.UNAUTHENTICATED, "`authorization` metadata that is not one "
           "`Bearer <token>`"),
    Reason("UNKNOWN_TOKEN", _S.UNAUTHENTICATED, "a bearer token that is not configured"),
    Reason("PERMISSION_DENIED", _S.PERMISSION_DENIED, "an operation (or stream) outside the "
           "caller's scopes"),
    Reason("DEADLINE_EXCEEDED", _S.DEADLINE_EXCEEDED, "the deadline passed before the batch "
           "started"),
    Reason("STREAM_TOO_LONG", _S.DEADLINE_EXCEEDED, "a stream open longer than "
           "`max_stream_seconds`"),
    Reason("STREAM_IDLE", _S.DEADLINE_EXCEEDED, "a stream sent no header within "
           "`stream_header_seconds`, or nothing for `stream_idle_seconds`"),
    Reason("DATABASE_TIMEOUT", _S.DEADLINE_EXCEEDED, "PostgreSQL did not answer in time"),
    Reason("DATABASE_UNAVAILABLE", _S.UNAVAILABLE, "the database connection was lost or "
           "refused: retry"),
    Reason("DRAINING", _S.UNAVAILABLE, "this server is shutting down: retry (another replica "
           "takes it)"),
    Reason("TOO_MANY_CONCURRENT", _S.RESOURCE_EXHAUSTED, "more concurrent batches or streams "
           "than allowed; RetryInfo says when to retry"),
    Reason("BAD_ROW", _S.INVALID_ARGUMENT, "an atomic stream's row was refused (the code is "
           "the row's own: INVALID_ARGUMENT, ALREADY_EXISTS, ...)"),
    Reason("INTERNAL", _S.INTERNAL, "a bug in batchd: no internals in the message, a "
           "`request_id` to find the traceback in the log"),
)


def markdown_table() -> str:
    """The README's table of reasons, made from ``REASONS`` and the SQLSTATE map."""
    lines = ["| code | reason | when |", "| --- | --- | --- |"]
    lines += [f"| {r.code.name} | `{r.reason}` | {r.when} |" for r in REASONS]
    by_code: dict[str, list[str]] = {}
    for state, code in BY_SQLSTATE.items():
        by_code.setdefault(code.name, []).append(state)
    for klass, code in BY_CLASS.items():
        by_code.setdefault(code.name, []).append(f"class {klass}")
    lines += [f"| {code} | *PostgreSQL's* | SQLSTATE {', '.join(states)} |"
              for code, states in by_code.items()]
    return "\n".join(lines)

