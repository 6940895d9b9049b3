"""PostgreSQL's refusals as batchd errors: the code of each SQLSTATE (by the shared map,
``batchd.vocabulary.sqlstates``), the reason named after asyncpg's exception, and the driver's
own exceptions. The server's alone: the only module of the errors that imports asyncpg."""

from __future__ import annotations

import logging
import re

import asyncpg
import grpc

from batchd.vocabulary import (
    BatchdError,
    DeadlineExceeded,
    InvalidArgument,
    Unavailable,
    reasons,
)
from batchd.vocabulary.sqlstates import BY_CLASS, BY_SQLSTATE

log = logging.getLogger("batchd.errors")
_S = grpc.StatusCode

class DatabaseError(BatchdError):
    """PostgreSQL refused the work; ``sqlstate`` says how (and whether a retry may help)."""

    def __init__(self, message: str, *, sqlstate: str, code: grpc.StatusCode, reason: str,
                 metadata: dict[str, str]) -> None:
        super().__init__(message, code=code, reason=reason, metadata=metadata)
        self.sqlstate = sqlstate

    @property
    def retryable_whole(self) -> bool:
        """Serialization failure or deadlock, or a stale cached statement: nothing was
        committed, so a rerun is safe."""
        return self.sqlstate in ("40001", "40P01") or self.stale_plan

    @property
    def stale_plan(self) -> bool:
        """A prepared statement made before the schema changed (a column's type: "cached plan
        must not change result type"), or a type asyncpg had cached: the driver has dropped
        its caches, and the transaction, rerun, prepares afresh. Never the caller's fault."""
        return self.reason in _STALE


_STALE = ("INVALID_CACHED_STATEMENT", "OUTDATED_SCHEMA_CACHE")


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
        return InvalidArgument(f"invalid value: {exc}", reason=reasons.INVALID_VALUE)
    if isinstance(exc, asyncpg.exceptions.InvalidCachedStatementError |
                  asyncpg.exceptions.OutdatedSchemaCacheError):
        # Retried whole by the executor (DatabaseError.stale_plan); seen by a client only
        # when every retry met one: ABORTED, retry.
        return DatabaseError(f"the schema changed under a cached statement: {exc}; retry",
                             sqlstate=getattr(exc, "sqlstate", None) or "0A000",
                             code=_S.ABORTED, reason=_reason(exc), metadata={})
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
        return DeadlineExceeded("database did not answer in time", reason=reasons.DATABASE_TIMEOUT)
    if isinstance(exc, ConnectionError | OSError | asyncpg.exceptions.InterfaceError):
        return Unavailable(f"database unavailable: {exc}")
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # Seen when PostgreSQL terminates an idle pooled connection: asyncpg has read the
        # server's FATAL message but not yet the socket's close, and refuses the next query.
        # Retryable like any lost connection; logged, since misuse of a connection looks alike.
        log.warning("database connection unusable", exc_info=exc)
        return Unavailable("database connection lost; retry")
    return None
