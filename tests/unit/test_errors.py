"""batchd.errors: the one mapping of exceptions to status codes and ErrorInfo reasons, the
google.rpc.Status round trip, and the docs' error table."""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from batchd import vocabulary
from batchd.errors import (
    BY_CLASS,
    BY_SQLSTATE,
    REASONS,
    BatchdError,
    BatchdRpcError,
    DatabaseError,
    DeadlineExceeded,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    SequenceOutOfOrder,
    Unavailable,
    code_of,
    from_database,
    from_rpc_status,
    is_final,
    markdown_table,
    not_committed,
    retry_later,
    to_rpc_status,
    translate,
)

S = grpc.StatusCode
ERRORS_PAGE = Path(__file__).parents[2] / "docs" / "reference" / "errors.md"


def postgres_error(sqlstate: str, message: str = "refused", **fields: str) -> asyncpg.PostgresError:
    """An exception as asyncpg builds it from PostgreSQL's ErrorResponse (field letters as in
    the protocol: D detail, n constraint, s schema, t table, c column)."""
    return asyncpg.PostgresError.new({"C": sqlstate, "M": message, **fields})


# --- the docs' table (docs/reference/errors.md, written by scripts/gen-docs) -----------------

def docs_error_table() -> str:
    lines = ERRORS_PAGE.read_text().splitlines()
    start = lines.index("| code | reason | when |")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end])


def test_the_docs_error_table_is_exactly_markdown_table() -> None:
    assert docs_error_table().splitlines() == markdown_table().splitlines()


def test_markdown_table_lists_every_reason_and_every_mapped_sqlstate() -> None:
    table = markdown_table()
    for r in REASONS:
        assert f"| {r.code.name} | `{r.reason}` | {r.when} |" in table
    for state in BY_SQLSTATE:
        assert re.search(rf"SQLSTATE [^|]*\b{state}\b", table), state
    for klass in BY_CLASS:
        assert f"class {klass}" in table


# --- REASONS and the error classes -----------------------------------------------------------

# Classes whose reason is not their own: the base class, PostgreSQL's errors (named after the
# SQLSTATE), and a status received from elsewhere.
NOT_OWN_REASON = {BatchdError, DatabaseError, BatchdRpcError}
ERROR_CLASSES = sorted(
    (c for _, c in inspect.getmembers(vocabulary, inspect.isclass)
     if issubclass(c, BatchdError) and c.__module__ == vocabulary.__name__
     and c not in NOT_OWN_REASON),
    key=lambda c: c.__name__)


def _reason_case(cls: type[BatchdError]) -> object:
    return pytest.param(cls, id=cls.__name__)


@pytest.mark.parametrize("cls", [_reason_case(c) for c in ERROR_CLASSES])
def test_every_error_class_reason_is_in_reasons_with_the_class_code(
        cls: type[BatchdError]) -> None:
    assert (cls.reason, cls.code) in {(r.reason, r.code) for r in REASONS}


def test_reasons_are_unique() -> None:
    names = [r.reason for r in REASONS]
    assert len(names) == len(set(names))


def test_reasons_are_upper_snake_case_and_say_when() -> None:
    for r in REASONS:
        assert re.fullmatch(r"[A-Z][A-Z_]*[A-Z]", r.reason), r.reason
        assert r.when and "|" not in r.when


# --- from_database: PostgreSQL's errors ------------------------------------------------------

def test_unique_violation_is_already_exists_with_constraint_table_and_detail() -> None:
    exc = postgres_error("23505", 'duplicate key value violates unique constraint "c_email_key"',
                         D="Key (email)=(a@x) already exists.", n="c_email_key", s="public",
                         t="customers")
    err = from_database(exc)
    assert isinstance(err, DatabaseError)
    assert (err.code, err.reason, err.sqlstate) == (S.ALREADY_EXISTS, "UNIQUE_VIOLATION", "23505")
    assert err.metadata == {"sqlstate": "23505", "constraint": "c_email_key", "schema": "public",
                            "table": "customers", "detail": "Key (email)=(a@x) already exists."}
    assert err.message == ('duplicate key value violates unique constraint "c_email_key" '
                           "(Key (email)=(a@x) already exists.)")


def test_not_null_violation_names_its_column() -> None:
    err = from_database(postgres_error("23502", "null value in column", c="email", t="customers"))
    assert err is not None
    assert err.code == S.INVALID_ARGUMENT and err.reason == "NOT_NULL_VIOLATION"
    assert err.metadata["column"] == "email" and err.metadata["table"] == "customers"
    assert "detail" not in err.metadata and err.message == "null value in column"


@pytest.mark.parametrize(("sqlstate", "code"), list(BY_SQLSTATE.items()))
def test_each_mapped_sqlstate_has_its_code(sqlstate: str, code: grpc.StatusCode) -> None:
    err = from_database(postgres_error(sqlstate))
    assert err is not None and err.code == code
    assert err.metadata["sqlstate"] == sqlstate


@pytest.mark.parametrize(("sqlstate", "code"), [
    ("08006", S.UNAVAILABLE),  # connection_failure
    ("21000", S.INVALID_ARGUMENT),  # cardinality_violation
    ("22P02", S.INVALID_ARGUMENT),  # invalid_text_representation
    ("23001", S.FAILED_PRECONDITION),  # restrict_violation
    ("40003", S.ABORTED),  # statement_completion_unknown
    ("42P01", S.INVALID_ARGUMENT),  # undefined_table
    ("53100", S.RESOURCE_EXHAUSTED),  # disk_full
    ("54001", S.INVALID_ARGUMENT),  # statement_too_complex
    ("0A000", S.INVALID_ARGUMENT),  # feature_not_supported
])
def test_an_unlisted_sqlstate_takes_the_code_of_its_class(sqlstate: str,
                                                          code: grpc.StatusCode) -> None:
    assert sqlstate not in BY_SQLSTATE
    err = from_database(postgres_error(sqlstate))
    assert err is not None and err.code == code


@pytest.mark.parametrize(("sqlstate", "code", "class_code"), [
    ("23505", S.ALREADY_EXISTS, S.FAILED_PRECONDITION),
    ("23502", S.INVALID_ARGUMENT, S.FAILED_PRECONDITION),
    ("42501", S.PERMISSION_DENIED, S.INVALID_ARGUMENT),
])
def test_an_exact_sqlstate_wins_over_its_class(sqlstate: str, code: grpc.StatusCode,
                                               class_code: grpc.StatusCode) -> None:
    assert BY_CLASS[sqlstate[:2]] == class_code
    err = from_database(postgres_error(sqlstate))
    assert err is not None and err.code == code


def test_a_sqlstate_of_an_unmapped_class_is_unknown() -> None:
    err = from_database(postgres_error("XX000"))  # internal_error
    assert err is not None and err.code == S.UNKNOWN and err.reason == "INTERNAL_SERVER"


@pytest.mark.parametrize(("sqlstate", "reason"), [
    ("23503", "FOREIGN_KEY_VIOLATION"),
    ("40001", "SERIALIZATION"),
    ("40P01", "DEADLOCK_DETECTED"),
    ("55P03", "LOCK_NOT_AVAILABLE"),
    ("57014", "QUERY_CANCELED"),
    ("P0001", "RAISE"),
])
def test_database_reason_is_asyncpg_class_name_in_upper_snake_case(sqlstate: str,
                                                                   reason: str) -> None:
    err = from_database(postgres_error(sqlstate))
    assert err is not None and err.reason == reason


@pytest.mark.parametrize(("sqlstate", "retryable"), [
    ("40001", True), ("40P01", True), ("40003", False), ("55P03", False), ("23505", False)])
def test_only_serialization_failures_and_deadlocks_rerun_a_batch_whole(sqlstate: str,
                                                                        retryable: bool) -> None:
    err = from_database(postgres_error(sqlstate))
    assert isinstance(err, DatabaseError) and err.retryable_whole is retryable


def test_a_message_less_postgres_error_uses_its_text() -> None:
    err = from_database(asyncpg.exceptions.CheckViolationError("price must be positive"))
    assert err is not None and err.message == "price must be positive"
    assert err.code == S.INVALID_ARGUMENT and err.reason == "CHECK_VIOLATION"


# --- from_database: the driver and the connection --------------------------------------------

def test_a_value_the_driver_cannot_encode_is_invalid_value() -> None:
    exc = asyncpg.exceptions.DataError("invalid input for query argument $1: 5.0 (expected str)")
    err = from_database(exc)
    assert err is not None
    assert (err.code, err.reason) == (S.INVALID_ARGUMENT, "INVALID_VALUE")
    assert "sqlstate" not in err.metadata


def test_a_connection_closed_mid_operation_is_database_unavailable() -> None:
    exc = asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle "
                                                         "of operation")
    err = from_database(exc)
    assert isinstance(err, Unavailable)
    assert (err.code, err.reason) == (S.UNAVAILABLE, "DATABASE_UNAVAILABLE")


def test_a_connection_closed_mid_operation_is_unavailable() -> None:
    exc = asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
    err = from_database(exc)
    assert err is not None and err.code == S.UNAVAILABLE


@pytest.mark.parametrize("exc", [
    asyncpg.exceptions.InterfaceError("connection is closed"),
    ConnectionRefusedError("refused"),
    ConnectionResetError("reset"),
    OSError("no route to host"),
], ids=type)
def test_a_lost_or_refused_connection_is_database_unavailable(exc: BaseException) -> None:
    err = from_database(exc)
    assert isinstance(err, Unavailable)
    assert (err.code, err.reason) == (S.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    assert str(exc) in err.message


def test_an_unusable_pooled_connection_is_unavailable_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="batchd.errors"):
        err = from_database(asyncpg.exceptions.InternalClientError("cannot perform operation"))
    assert isinstance(err, Unavailable) and err.reason == "DATABASE_UNAVAILABLE"
    assert "cannot perform operation" not in err.message
    assert any("unusable" in r.getMessage() for r in caplog.records)


def test_a_database_timeout_is_deadline_exceeded() -> None:
    err = from_database(TimeoutError())  # what asyncio.timeout and asyncpg raise
    assert isinstance(err, DeadlineExceeded)
    assert (err.code, err.reason) == (S.DEADLINE_EXCEEDED, "DATABASE_TIMEOUT")


@pytest.mark.parametrize("exc", [KeyError("x"), ValueError("v"), RuntimeError("r"),
                                 AssertionError()], ids=type)
def test_anything_else_is_not_a_database_error(exc: BaseException) -> None:
    assert from_database(exc) is None


# --- translate -------------------------------------------------------------------------------

def test_translate_passes_our_errors_through_unchanged() -> None:
    err = NotFound("no such row")
    assert translate(err, "r-1") is err


def test_translate_maps_database_errors() -> None:
    err = translate(postgres_error("23503"), "r-1")
    assert err.code == S.FAILED_PRECONDITION and err.reason == "FOREIGN_KEY_VIOLATION"


def test_a_bug_becomes_internal_with_the_request_id_and_no_internals(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="batchd.errors"):
        err = translate(KeyError("secret_column"), "req-42")
    assert isinstance(err, Internal)
    assert (err.code, err.reason) == (S.INTERNAL, "INTERNAL")
    assert "req-42" in err.message and "secret_column" not in err.message
    assert err.metadata == {"request_id": "req-42"}
    [record] = [r for r in caplog.records if r.name == "batchd.errors"]
    assert "req-42" in record.getMessage() and record.exc_info is not None


# --- codes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("code", list(S), ids=lambda c: c.name)
def test_code_of_is_the_inverse_of_the_status_code_number(code: grpc.StatusCode) -> None:
    assert code_of(code.value[0]) is code


@pytest.mark.parametrize("number", [-1, 17, 999])
def test_code_of_an_unknown_number_is_unknown(number: int) -> None:
    assert code_of(number) is S.UNKNOWN


@pytest.mark.parametrize(("code", "final"), [
    (S.INVALID_ARGUMENT, True), (S.NOT_FOUND, True), (S.ALREADY_EXISTS, True),
    (S.FAILED_PRECONDITION, True), (S.PERMISSION_DENIED, True), (S.OUT_OF_RANGE, True),
    (S.ABORTED, False), (S.UNAVAILABLE, False), (S.DEADLINE_EXCEEDED, False),
    (S.RESOURCE_EXHAUSTED, False), (S.CANCELLED, False), (S.INTERNAL, False),
    (S.UNKNOWN, False), (S.UNAUTHENTICATED, False),
], ids=lambda v: getattr(v, "name", str(v)))
def test_only_errors_the_same_request_would_meet_again_are_final(code: grpc.StatusCode,
                                                                 final: bool) -> None:
    assert is_final(BatchdError("x", code=code)) is final


def test_operations_not_committed_are_aborted() -> None:
    status = not_committed("rolled back")
    assert code_of(status.code) == S.ABORTED and status.message == "rolled back"
    assert not status.details


# --- the error objects -----------------------------------------------------------------------

def test_invalid_argument_field_names_the_field_in_message_and_violation() -> None:
    err = InvalidArgument.field("operations[2].insert.rows[0].price", "expected a number")
    assert err.message == "operations[2].insert.rows[0].price: expected a number"
    assert err.violations == [FieldViolation("operations[2].insert.rows[0].price",
                                             "expected a number")]
    assert err.field_violations is err.violations


def test_an_error_keeps_the_first_operation_it_is_attributed_to() -> None:
    err = NotFound("gone")
    assert err.full_message == "gone"
    assert err.for_operation("a") is err and err.for_operation("b") is err
    assert err.operation_id == "a" and err.full_message == 'operation "a": gone'


def test_sequence_out_of_order_says_which_sequence_is_expected() -> None:
    err = SequenceOutOfOrder(7, 5)
    assert err.code == S.FAILED_PRECONDITION and err.reason == "SEQUENCE_OUT_OF_ORDER"
    assert err.metadata == {"expected_sequence": "5"}
    assert "7" in err.message and "5" in err.message


def test_retry_later_adds_retry_info_found_by_detail() -> None:
    err = retry_later(vocabulary.Overloaded("busy"), 3)
    info = err.detail(error_details_pb2.RetryInfo)
    assert info is not None and info.retry_delay.seconds == 3
    assert err.detail(error_details_pb2.DebugInfo) is None


# --- google.rpc.Status -----------------------------------------------------------------------

def unpack(status: status_pb2.Status, kind: type) -> list:
    found = []
    for packed in status.details:
        if packed.Is(kind.DESCRIPTOR):
            message = kind()
            packed.Unpack(message)
            found.append(message)
    return found


def test_to_rpc_status_carries_code_message_error_info_and_bad_request() -> None:
    err = InvalidArgument.field("operations[0].id", "must not be empty",
                                metadata={"extra": "1"}).for_operation("op1")
    status = to_rpc_status(err)
    assert status.code == S.INVALID_ARGUMENT.value[0]
    assert status.message == 'operation "op1": operations[0].id: must not be empty'
    [info] = unpack(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "batchd")
    assert dict(info.metadata) == {"extra": "1", "operation_id": "op1"}
    [bad] = unpack(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == \
        [("operations[0].id", "must not be empty")]
    assert err.metadata == {"extra": "1"}  # the error itself is not changed


def test_to_rpc_status_without_violations_has_no_bad_request() -> None:
    status = to_rpc_status(NotFound("gone"))
    assert len(status.details) == 1 and not unpack(status, error_details_pb2.BadRequest)


def test_to_rpc_status_packs_extra_details_after_error_info() -> None:
    status = to_rpc_status(retry_later(vocabulary.Overloaded("busy"), 2))
    assert [d.TypeName() for d in status.details] == ["google.rpc.ErrorInfo",
                                                      "google.rpc.RetryInfo"]


def test_status_round_trip_keeps_code_reason_metadata_violations_and_operation() -> None:
    err = retry_later(InvalidArgument.field("f", "bad", metadata={"k": "v"}), 5)
    err.for_operation("op7")
    back = from_rpc_status(to_rpc_status(err))
    assert isinstance(back, BatchdRpcError)
    assert (back.code, back.reason, back.operation_id) == (S.INVALID_ARGUMENT,
                                                           "INVALID_ARGUMENT", "op7")
    assert back.error_info == {"k": "v", "operation_id": "op7"}
    assert back.field_violations == [FieldViolation("f", "bad")]
    assert back.message == back.full_message == 'operation "op7": f: bad'
    info = back.detail(error_details_pb2.RetryInfo)
    assert info is not None and info.retry_delay.seconds == 5


def test_a_received_status_sent_again_is_the_same_status() -> None:
    status = to_rpc_status(retry_later(
        InvalidArgument.field("f", "bad").for_operation("x"), 1))
    assert to_rpc_status(from_rpc_status(status)) == status


def test_a_status_without_details_has_no_reason() -> None:
    err = from_rpc_status(status_pb2.Status(code=S.UNAVAILABLE.value[0], message="down"))
    assert (err.code, err.reason, err.error_info, err.field_violations) == \
        (S.UNAVAILABLE, "", {}, [])
    assert err.operation_id is None
    assert str(err) == "UNAVAILABLE: down"


def test_unknown_details_are_kept_packed() -> None:
    extra = any_pb2.Any()
    extra.Pack(error_details_pb2.DebugInfo(detail="why"))
    err = from_rpc_status(status_pb2.Status(code=13, message="m", details=[extra]))
    assert err.extra_details == [extra]
    debug = err.detail(error_details_pb2.DebugInfo)
    assert debug is not None and debug.detail == "why"


def test_a_sqlstate_reason_keeps_its_acronym_as_one_word() -> None:
    err = from_database(asyncpg.exceptions.ReadOnlySQLTransactionError("read-only"))
    assert err is not None and err.reason == "READ_ONLY_SQL_TRANSACTION"
