"""Every ErrorInfo reason batchd sends, as a constant and with its code: the docs' error
table is made here.

The constants are what code compares a reason with (``error.reason == reasons.DRAINING``), on
the server and in the clients alike, so that a reason is spelled once: a typo is a NameError,
not a retry that never happens.
"""

from __future__ import annotations

from typing import NamedTuple

import grpc

from batchd.vocabulary.sqlstates import BY_CLASS, BY_SQLSTATE

_S = grpc.StatusCode

INVALID_ARGUMENT = "INVALID_ARGUMENT"
INVALID_VALUE = "INVALID_VALUE"
NOT_FOUND = "NOT_FOUND"
TOO_MANY_ROWS = "TOO_MANY_ROWS"
VERSION_CONFLICT = "VERSION_CONFLICT"
REQUEST_IN_PROGRESS = "REQUEST_IN_PROGRESS"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
STREAM_ID_TAKEN = "STREAM_ID_TAKEN"
SEQUENCE_OUT_OF_ORDER = "SEQUENCE_OUT_OF_ORDER"
DEPENDENCY_FAILED = "DEPENDENCY_FAILED"
DEPENDENCY_NOT_SUCCEEDED = "DEPENDENCY_NOT_SUCCEEDED"
UNAUTHENTICATED = "UNAUTHENTICATED"
MISSING_TOKEN = "MISSING_TOKEN"
MALFORMED_TOKEN = "MALFORMED_TOKEN"
UNKNOWN_TOKEN = "UNKNOWN_TOKEN"
PERMISSION_DENIED = "PERMISSION_DENIED"
INSUFFICIENT_PRIVILEGE = "INSUFFICIENT_PRIVILEGE"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
STREAM_TOO_LONG = "STREAM_TOO_LONG"
STREAM_IDLE = "STREAM_IDLE"
DATABASE_TIMEOUT = "DATABASE_TIMEOUT"
DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
DRAINING = "DRAINING"
TOO_MANY_CONCURRENT = "TOO_MANY_CONCURRENT"
BAD_ROW = "BAD_ROW"
INTERNAL = "INTERNAL"
UNEXPECTED_RESPONSE = "UNEXPECTED_RESPONSE"


class Reason(NamedTuple):
    reason: str
    code: grpc.StatusCode
    when: str


# Every ErrorInfo reason batchd sends (and the one its Python client raises itself), besides
# DatabaseError's, which are named after asyncpg's exception class for the SQLSTATE
# (UNIQUE_VIOLATION, FOREIGN_KEY_VIOLATION, ...) and coded by BY_SQLSTATE / BY_CLASS. Custom
# handlers may send reasons of their own.
REASONS: tuple[Reason, ...] = (
    Reason(INVALID_ARGUMENT, _S.INVALID_ARGUMENT, "malformed request: unknown table or "
           "column, wrong value type, bad operation id, unknown reference, cycle, limits"),
    Reason(INVALID_VALUE, _S.INVALID_ARGUMENT, "the driver cannot encode a value for its "
           "column type"),
    Reason(NOT_FOUND, _S.NOT_FOUND, "`get`, keyed `update`/`delete` of a row that does not "
           "exist"),
    Reason(TOO_MANY_ROWS, _S.OUT_OF_RANGE, "a `call` of a SQL function returned more rows "
           "than `max_page_size`"),
    Reason(VERSION_CONFLICT, _S.ABORTED, "optimistic locking: the row's version is not "
           "`expected_version`"),
    Reason(REQUEST_IN_PROGRESS, _S.ABORTED, "a call with the same `request_id` is still "
           "running: retry"),
    Reason(FAILED_PRECONDITION, _S.FAILED_PRECONDITION, "an atomic stream ended without "
           "its commit message; a stream id opened for another table"),
    Reason(REQUEST_ID_REUSED, _S.FAILED_PRECONDITION, "a `request_id` already used for a "
           "different request"),
    Reason(STREAM_ID_TAKEN, _S.FAILED_PRECONDITION, "a stream id another principal "
           "opened: use another one"),
    Reason(SEQUENCE_OUT_OF_ORDER, _S.FAILED_PRECONDITION, "a stream chunk whose sequence "
           "is not the next one"),
    Reason(DEPENDENCY_FAILED, _S.FAILED_PRECONDITION, "a referenced row is missing at run "
           "time"),
    Reason(DEPENDENCY_NOT_SUCCEEDED, _S.FAILED_PRECONDITION, "SKIPPED: an operation this "
           "one depends on did not succeed"),
    Reason(UNAUTHENTICATED, _S.UNAUTHENTICATED, "no valid credentials"),
    Reason(MISSING_TOKEN, _S.UNAUTHENTICATED, "authentication is on and the call has no "
           "credentials"),
    Reason(MALFORMED_TOKEN, _S.UNAUTHENTICATED, "`authorization` metadata that is not one "
           "`Bearer <token>`"),
    Reason(UNKNOWN_TOKEN, _S.UNAUTHENTICATED, "a bearer token that is not configured"),
    Reason(PERMISSION_DENIED, _S.PERMISSION_DENIED, "an operation (or stream) outside the "
           "caller's scopes"),
    Reason(INSUFFICIENT_PRIVILEGE, _S.PERMISSION_DENIED, "the database role may not do it "
           "(PostgreSQL's 42501; a stream: checked before its first chunk, naming the table, "
           "the privilege and the role)"),
    Reason(DEADLINE_EXCEEDED, _S.DEADLINE_EXCEEDED, "the deadline passed before the batch "
           "started"),
    Reason(STREAM_TOO_LONG, _S.DEADLINE_EXCEEDED, "a stream open longer than "
           "`max_stream_seconds`"),
    Reason(STREAM_IDLE, _S.DEADLINE_EXCEEDED, "a stream sent no header within "
           "`stream_header_seconds`, or nothing for `stream_idle_seconds`"),
    Reason(DATABASE_TIMEOUT, _S.DEADLINE_EXCEEDED, "PostgreSQL did not answer in time"),
    Reason(DATABASE_UNAVAILABLE, _S.UNAVAILABLE, "the database connection was lost or "
           "refused: retry"),
    Reason(DRAINING, _S.UNAVAILABLE, "this server is shutting down: retry (another replica "
           "takes it)"),
    Reason(TOO_MANY_CONCURRENT, _S.RESOURCE_EXHAUSTED, "more concurrent batches or streams "
           "than allowed; RetryInfo says when to retry"),
    Reason(BAD_ROW, _S.INVALID_ARGUMENT, "an atomic stream's row was refused (the code is "
           "the row's own: INVALID_ARGUMENT, ALREADY_EXISTS, ...)"),
    Reason(INTERNAL, _S.INTERNAL, "a bug in batchd: no internals in the message, a "
           "`request_id` to find the traceback in the log"),
    Reason(UNEXPECTED_RESPONSE, _S.INTERNAL, "raised by the Python client, not sent: a response "
           "that breaks the contract (a stream not opened by `StreamOpened`, or ended without "
           "its summary)"),
)


def markdown_table() -> str:
    """The error reference's table of reasons (docs/reference/errors.md), made from
    ``REASONS`` and the SQLSTATE map."""
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
