"""PostgreSQL's SQLSTATEs as gRPC codes: the one map, exact states first, then their
two-character class. The server codes a ``DatabaseError`` by it (``batchd.errors.database``);
the docs' error table lists it (``reasons.markdown_table``). Plain data: no driver needed."""

from __future__ import annotations

import grpc

_S = grpc.StatusCode

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
