"""Errors, and the only two places that decide what the caller sees.

    BatchdError          expected; goes on the wire with its own gRPC code
     ├── InvalidArgument  the request is malformed; carries BadRequest field violations
     ├── NotFound         a keyed row does not exist
     ├── VersionConflict  optimistic locking: the row's version is not the expected one
     ├── FailedPrecondition the system is not in the state the request needs
     │    └── RequestIdReused  a request id already used for a different request
     ├── RequestInProgress another call with the same request id is running (ABORTED)
     ├── Unauthenticated  no valid credentials (missing, malformed or unknown token)
     ├── PermissionDenied the caller's scopes do not cover an operation
     ├── DependencyFailed a referenced row is missing at run time
     │    └── Skipped     an operation this one depends on did not succeed (INDEPENDENT)
     └── DatabaseError    PostgreSQL refused; carries SQLSTATE, constraint, table, column

``from_database(exc)`` turns asyncpg's exceptions into ``DatabaseError`` (most specific
SQLSTATE first, then its class); ``to_rpc_status(err)`` turns any ``BatchdError`` into a
``google.rpc.Status`` with details, and ``from_rpc_status`` back (a stored failure, replayed).
Nothing else picks status codes. Any other exception is a
bug in batchd: the caller gets INTERNAL with a request id, and the log gets the traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "batchd"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field: a path like ``operations[2].insert.rows[0].price`` and why."""

    field: str
    description: str


class BatchdError(Exception):
    """An error the caller should see, with its gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
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


class InvalidArgument(BatchdError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    @classmethod
    def field(cls, field: str, description: str, **kwargs: object) -> InvalidArgument:
        """The common case: one field is wrong, and the message says which."""
        return cls(f"{field}: {description}", violations=[FieldViolation(field, description)],
                   **kwargs)  # type: ignore[arg-type]


class NotFound(BatchdError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class VersionConflict(BatchdError):
    code = grpc.StatusCode.ABORTED
    reason = "VERSION_CONFLICT"


class DependencyFailed(BatchdError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "DEPENDENCY_FAILED"


class FailedPrecondition(BatchdError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class RequestIdReused(FailedPrecondition):
    """The request id was already used for a different request (see batchd.batch.idempotency)."""

    reason = "REQUEST_ID_REUSED"


class RequestInProgress(BatchdError):
    """Another call with the same request id has not finished: retry later, and get its
    answer (see batchd.batch.idempotency)."""

    code = grpc.StatusCode.ABORTED
    reason = "REQUEST_IN_PROGRESS"


class Unauthenticated(BatchdError):
    """No valid credentials; raised by batchd.auth before any handler runs."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(BatchdError):
    """An authenticated caller whose scopes do not cover an operation (see batchd.auth)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Skipped(DependencyFailed):
    reason = "DEPENDENCY_NOT_SUCCEEDED"


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


_S = grpc.StatusCode
# Exact SQLSTATEs first, then their two-character class. Comments say why when not obvious.
_BY_SQLSTATE: dict[str, grpc.StatusCode] = {
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
_BY_CLASS: dict[str, grpc.StatusCode] = {
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
    """``UniqueViolationError`` -> ``UNIQUE_VIOLATION``."""
    name = type(exc).__name__.removesuffix("Error")
    return "".join("_" + c if c.isupper() and i else c for i, c in enumerate(name)).upper()


def from_database(exc: BaseException) -> BatchdError | None:
    """Translate an exception raised while talking to PostgreSQL into a ``BatchdError``.

    Only the driver's and the connection's exceptions are translated; for anything else this
    returns None, because anything else is a bug in batchd.
    """
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate or ""
        code = _BY_SQLSTATE.get(sqlstate) or _BY_CLASS.get(sqlstate[:2], _S.UNKNOWN)
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
    if isinstance(exc, asyncpg.exceptions.DataError):
        # The driver refused to encode a value for its column type.
        return BatchdError(f"invalid value: {exc}", code=_S.INVALID_ARGUMENT,
                           reason="INVALID_VALUE")
    if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError | ConnectionError | OSError
                  | asyncpg.exceptions.InterfaceError):
        return BatchdError(f"database unavailable: {exc}", code=_S.UNAVAILABLE,
                           reason="DATABASE_UNAVAILABLE")
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # Seen when PostgreSQL terminates an idle pooled connection: asyncpg has read the
        # server's FATAL message but not yet the socket's close, and refuses the next query.
        # Retryable like any lost connection; logged, since misuse of a connection looks alike.
        log.warning("database connection unusable", exc_info=exc)
        return BatchdError("database connection lost; retry", code=_S.UNAVAILABLE,
                           reason="DATABASE_UNAVAILABLE")
    if isinstance(exc, asyncio.TimeoutError):
        return BatchdError("database did not answer in time", code=_S.DEADLINE_EXCEEDED,
                           reason="DATABASE_TIMEOUT")
    return None


def internal(request_id: str) -> BatchdError:
    """The caller's view of a bug: no internals, a request id to find it in the log."""
    return BatchdError(f"internal error; see the server log for request id {request_id}",
                       code=_S.INTERNAL, reason="INTERNAL", metadata={"request_id": request_id})


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


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def from_rpc_status(status: status_pb2.Status) -> BatchdError:
    """The error ``status`` was made from by ``to_rpc_status``, rebuilt: ``to_rpc_status``
    of it gives ``status`` back. Details other than ErrorInfo and BadRequest stay packed in
    ``extra_details``."""
    error = BatchdError(status.message, code=_CODES.get(status.code, _S.UNKNOWN))
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            error.reason = info.reason
            error.metadata = dict(info.metadata)
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            error.violations = [FieldViolation(v.field, v.description)
                                for v in bad.field_violations]
        else:
            error.extra_details.append(packed)
    return error


OK_STATUS = status_pb2.Status(code=0, message="")
