"""What the clients return: typed results, the schema, and the error of a failed atomic batch.

Rows are plain dicts of Python values, each decoded by its column's PostgreSQL type
(``batchd.client.values``) into what asyncpg would return for it: int, Decimal, datetime,
UUID, bytes, ... (a custom handler's by the types its Python values render as; a value of a
column the result does not list, as the wire has it). ``to_dict()`` gives the response as
grpcurl prints it. Errors are those of ``batchd.vocabulary`` (one tree, one code map, shared with
the server), which translates a ``grpc.RpcError`` (``from_rpc_error``); ``rpc_error`` adds only
``AtomicBatchError`` when the status carries every operation's outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format

from batchd.client.builder import OpRef
from batchd.client.values import decode_rows
from batchd.names import outcome_name
from batchd.v1 import batch_pb2
from batchd.vocabulary import BatchdRpcError, FieldViolation, from_rpc_error, from_rpc_status


@dataclass(frozen=True)
class OperationOutcome:
    """What happened to one operation.

    ``outcome`` is the name of the proto ``Outcome`` without its prefix (``OUTCOME_``):
    ``"SUCCEEDED"``, ``"FAILED"``, ``"ROLLED_BACK"``, ``"NOT_RUN"`` or ``"SKIPPED"``.
    ``code`` is a ``grpc.StatusCode`` (``OK`` when it succeeded); ``reason``, ``error_info``
    (the ErrorInfo metadata: sqlstate, constraint, table, ...) and ``field_violations`` come
    from its status details. ``rows`` hold Python values decoded by ``columns`` (name ->
    PostgreSQL type, in order; empty when the server does not know them: then the values are
    as the wire has them).
    """

    id: str
    outcome: str
    code: Any  # grpc.StatusCode (grpc ships no type information)
    message: str
    rows: list[dict[str, Any]]
    rows_affected: int
    next_page_token: str
    total_count: int | None = None  # a query with count: matching rows on all pages
    reason: str = ""
    error_info: dict[str, str] = field(default_factory=dict)
    field_violations: list[FieldViolation] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.outcome == "SUCCEEDED"

    @property
    def row(self) -> dict[str, Any] | None:
        """The first row returned, if any."""
        return self.rows[0] if self.rows else None

    @classmethod
    def from_proto(cls, result: batch_pb2.OperationResult) -> OperationOutcome:
        details = from_rpc_status(result.status)
        columns = {c.name: c.type for c in result.columns}
        return cls(id=result.id, outcome=outcome_name(result.outcome),
                   code=details.code, message=result.status.message,
                   rows=decode_rows(result.rows, columns), columns=columns,
                   rows_affected=result.rows_affected, next_page_token=result.next_page_token,
                   total_count=result.total_count if result.HasField("total_count") else None,
                   reason=details.reason, error_info=details.error_info,
                   field_violations=details.field_violations)


@dataclass(frozen=True)
class BatchResult:
    """A ``BatchExecuteResponse``, typed. ``result["order"]``, ``result[order_ref]`` and
    ``result[1]`` give one ``OperationOutcome``; iterating gives them all in request order."""

    committed: bool
    attempts: int
    results: list[OperationOutcome]
    response: batch_pb2.BatchExecuteResponse = field(repr=False, compare=False)
    replayed: bool = False  # the stored answer to an earlier request with the same request_id

    @classmethod
    def from_proto(cls, response: batch_pb2.BatchExecuteResponse) -> BatchResult:
        return cls(committed=response.committed, attempts=response.attempts,
                   results=[OperationOutcome.from_proto(r) for r in response.results],
                   response=response, replayed=response.replayed)

    def __getitem__(self, key: str | OpRef | int) -> OperationOutcome:
        if isinstance(key, int):
            return self.results[key]
        op_id = key.id if isinstance(key, OpRef) else key
        for outcome in self.results:
            if outcome.id == op_id:
                return outcome
        raise KeyError(op_id)

    def __iter__(self) -> Iterator[OperationOutcome]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    @property
    def ok(self) -> bool:
        """Whether every operation SUCCEEDED."""
        return all(outcome.succeeded for outcome in self.results)

    @property
    def outcomes(self) -> dict[str, str]:
        """``{operation id: outcome name}``, in request order."""
        return {outcome.id: outcome.outcome for outcome in self.results}

    def to_dict(self) -> dict[str, Any]:
        """The response as grpcurl would print it: JSON names, and values in the wire's
        forms (bigint and numeric as strings, ...), not decoded."""
        return json_format.MessageToDict(self.response)


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    type: str
    nullable: bool
    has_default: bool


@dataclass(frozen=True)
class TableSchema:
    """An exposed table. ``version_column`` / ``soft_delete_column`` are None when absent."""

    name: str
    columns: list[ColumnSchema]
    primary_key: list[str]
    version_column: str | None
    soft_delete_column: str | None
    operations: list[str]

    def column(self, name: str) -> ColumnSchema:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


@dataclass(frozen=True)
class ArgumentSchema:
    """An input argument of an exposed SQL function."""

    name: str
    type: str
    has_default: bool


@dataclass(frozen=True)
class FunctionSchema:
    """An exposed SQL function (overloads are several of the same ``name``)."""

    name: str
    arguments: list[ArgumentSchema]
    returns: str
    returns_set: bool
    result_columns: list[ColumnSchema]

    @property
    def signature(self) -> str:
        """``public.add(a integer, b integer)``."""
        return f"{self.name}({', '.join(f'{a.name} {a.type}' for a in self.arguments)})"


@dataclass(frozen=True)
class Schema:
    """What callers may use: ``GetSchemaResponse``, typed."""

    tables: list[TableSchema]
    handlers: list[str]
    response: batch_pb2.GetSchemaResponse = field(repr=False, compare=False)
    functions: list[FunctionSchema] = field(default_factory=list)

    @classmethod
    def from_proto(cls, response: batch_pb2.GetSchemaResponse) -> Schema:
        tables = [TableSchema(
            name=t.name,
            columns=[ColumnSchema(c.name, c.type, c.nullable, c.has_default) for c in t.columns],
            primary_key=list(t.primary_key), version_column=t.version_column or None,
            soft_delete_column=t.soft_delete_column or None, operations=list(t.operations),
        ) for t in response.tables]
        functions = [FunctionSchema(
            name=f.name,
            arguments=[ArgumentSchema(a.name, a.type, a.has_default) for a in f.arguments],
            returns=f.returns, returns_set=f.returns_set,
            result_columns=[ColumnSchema(c.name, c.type, c.nullable, c.has_default)
                            for c in f.result_columns],
        ) for f in response.functions]
        return cls(tables=tables, handlers=list(response.handlers), response=response,
                   functions=functions)

    def table(self, name: str) -> TableSchema:
        """By full name (``"public.orders"``) or, when unambiguous, by table name alone."""
        matches = [t for t in self.tables if t.name == name] or \
            [t for t in self.tables if t.name.rsplit(".", 1)[-1] == name]
        if len(matches) != 1:
            raise KeyError(name)
        return matches[0]

    def to_dict(self) -> dict[str, Any]:
        return json_format.MessageToDict(self.response)


class AtomicBatchError(BatchdRpcError):
    """An ATOMIC batch failed and nothing was committed. ``outcomes`` holds every operation's
    outcome: the failing one FAILED, earlier ones ROLLED_BACK (without rows), later ones
    NOT_RUN (or all FAILED / NOT_RUN when the batch was refused before running)."""

    def __init__(self, error: BatchdRpcError, outcomes: BatchResult) -> None:
        super().__init__(error.code, error.message, reason=error.reason,
                         error_info=error.metadata, field_violations=error.violations)
        self.extra_details = error.extra_details
        self.outcomes = outcomes


def rpc_error(exc: grpc.RpcError) -> BatchdRpcError:
    """A gRPC error (sync or aio) as this client's error: the vocabulary's translation
    (``from_rpc_error``), as an ``AtomicBatchError`` when its details carry the response."""
    error = from_rpc_error(exc)
    response = error.detail(batch_pb2.BatchExecuteResponse)
    if response is not None:
        return AtomicBatchError(error, BatchResult.from_proto(response))
    return error
