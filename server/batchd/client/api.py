"""Python clients of batchd: ``AsyncClient`` (grpc.aio) and ``Client`` (blocking), typed results
and errors. Batches are built with ``Batch`` (``batchd.client.builder``, re-exported here).

    async with AsyncClient("127.0.0.1:50051") as client:
        b = Batch()
        customer = b.insert("customers", {"name": "Ada", "email": "ada@example.com"})
        order = b.insert("orders", {"customer_id": customer.ref("id")}, returning=["id"])
        try:
            result = await client.execute(b)
        except AtomicBatchError as err:
            print(err.operation_id, err.code, err.outcomes[order].outcome)
        else:
            print(result[order].rows[0]["id"])

Results: ``execute`` returns a ``BatchResult`` (``committed``, ``attempts``, one
``OperationOutcome`` per operation, indexable by id, ``OpRef`` or position). Rows are plain
dicts as ``json_format.MessageToDict`` makes them, so values keep the server's exact mapping:
bigint and numeric columns come back as strings.

Errors (one mapping, ``rpc_error``, from any ``grpc.RpcError``)::

    BatchdError
     └── BatchdRpcError        the RPC failed: code, message, reason, error_info, field_violations
          └── AtomicBatchError the status details carry every operation's outcome (``outcomes``)

An ATOMIC batch that fails raises ``AtomicBatchError``, whether it failed while running or was
refused before anything ran (INVALID_ARGUMENT with per-operation outcomes). An INDEPENDENT
batch does not raise for failed operations: the RPC succeeded, and each ``OperationOutcome``
says what happened (``BatchResult.ok`` is whether all succeeded). Anything without such details
(an unreachable server, a request refused as a whole) is a plain ``BatchdRpcError``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple, Self

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from batchd.client.builder import Batch, OpRef
from batchd.v1 import batch_pb2, batch_pb2_grpc

__all__ = ["AsyncClient", "AtomicBatchError", "Batch", "BatchResult", "BatchdError",
           "BatchdRpcError", "Client", "ColumnSchema", "FieldViolation", "OpRef",
           "OperationOutcome", "Schema", "TableSchema", "rpc_error"]

Metadata = Sequence[tuple[str, str]] | Mapping[str, str]

_CODES: dict[int, Any] = {code.value[0]: code for code in grpc.StatusCode}


class FieldViolation(NamedTuple):
    """One invalid field of a request: ``operations[1].insert.rows[0].price`` and why."""

    field: str
    description: str


@dataclass(frozen=True)
class _Details:
    reason: str = ""
    error_info: dict[str, str] = field(default_factory=dict)
    field_violations: list[FieldViolation] = field(default_factory=list)
    response: batch_pb2.BatchExecuteResponse | None = None


def _details(status: status_pb2.Status | None) -> _Details:
    """The details batchd attaches to a google.rpc.Status (unknown ones are ignored)."""
    if status is None:
        return _Details()
    reason, info, violations, response = "", {}, [], None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            error_info = error_details_pb2.ErrorInfo()
            detail.Unpack(error_info)
            reason, info = error_info.reason, dict(error_info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(batch_pb2.BatchExecuteResponse.DESCRIPTOR):
            response = batch_pb2.BatchExecuteResponse()
            detail.Unpack(response)
    return _Details(reason, info, violations, response)


@dataclass(frozen=True)
class OperationOutcome:
    """What happened to one operation.

    ``outcome`` is the name of the proto ``Outcome``: ``"SUCCEEDED"``, ``"FAILED"``,
    ``"ROLLED_BACK"``, ``"NOT_RUN"`` or ``"SKIPPED"``. ``code`` is a ``grpc.StatusCode``
    (``OK`` when it succeeded); ``reason``, ``error_info`` (the ErrorInfo metadata: sqlstate,
    constraint, table, ...) and ``field_violations`` come from its status details.
    """

    id: str
    outcome: str
    code: Any  # grpc.StatusCode (grpc ships no type information)
    message: str
    rows: list[dict[str, Any]]
    rows_affected: int
    next_page_token: str
    reason: str = ""
    error_info: dict[str, str] = field(default_factory=dict)
    field_violations: list[FieldViolation] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.outcome == "SUCCEEDED"

    @property
    def row(self) -> dict[str, Any] | None:
        """The first row returned, if any."""
        return self.rows[0] if self.rows else None

    @classmethod
    def from_proto(cls, result: batch_pb2.OperationResult) -> OperationOutcome:
        details = _details(result.status)
        return cls(id=result.id, outcome=batch_pb2.Outcome.Name(result.outcome),
                   code=_CODES.get(result.status.code, grpc.StatusCode.UNKNOWN),
                   message=result.status.message,
                   rows=[json_format.MessageToDict(row) for row in result.rows],
                   rows_affected=result.rows_affected, next_page_token=result.next_page_token,
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
        """The response as grpcurl would print it (JSON names, exact values)."""
        return json_format.MessageToDict(self.response)


class BatchdError(Exception):
    """Base class of the errors of this client."""


class BatchdRpcError(BatchdError):
    """The RPC failed. ``code`` is a ``grpc.StatusCode``; ``reason`` and ``error_info`` (the
    ErrorInfo metadata: ``operation_id``, ``sqlstate``, ``constraint``, ...) and
    ``field_violations`` come from the google.rpc.Status details, when the server sent any."""

    def __init__(self, code: Any, message: str, *, reason: str = "",
                 error_info: dict[str, str] | None = None,
                 field_violations: list[FieldViolation] | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.error_info = error_info or {}
        self.field_violations = field_violations or []

    @property
    def operation_id(self) -> str | None:
        """The operation that failed, when the error is about one."""
        return self.error_info.get("operation_id")


class AtomicBatchError(BatchdRpcError):
    """An ATOMIC batch failed and nothing was committed. ``outcomes`` holds every operation's
    outcome: the failing one FAILED, earlier ones ROLLED_BACK (without rows), later ones
    NOT_RUN (or all FAILED / NOT_RUN when the batch was refused before running)."""

    def __init__(self, code: Any, message: str, outcomes: BatchResult, **details: Any) -> None:
        super().__init__(code, message, **details)
        self.outcomes = outcomes


def rpc_error(exc: grpc.RpcError) -> BatchdRpcError:
    """The one translation of a gRPC error (sync or aio) into this client's errors."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
    try:
        status = rpc_status.from_call(exc) if hasattr(exc, "trailing_metadata") else None
    except ValueError:  # details that contradict the call's code or message: ignore them
        status = None
    details = _details(status)
    extra: dict[str, Any] = dict(reason=details.reason, error_info=details.error_info,
                                 field_violations=details.field_violations)
    if details.response is not None:
        return AtomicBatchError(code, message, BatchResult.from_proto(details.response), **extra)
    return BatchdRpcError(code, message, **extra)


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
class Schema:
    """What callers may use: ``GetSchemaResponse``, typed."""

    tables: list[TableSchema]
    handlers: list[str]
    response: batch_pb2.GetSchemaResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, response: batch_pb2.GetSchemaResponse) -> Schema:
        tables = [TableSchema(
            name=t.name,
            columns=[ColumnSchema(c.name, c.type, c.nullable, c.has_default) for c in t.columns],
            primary_key=list(t.primary_key), version_column=t.version_column or None,
            soft_delete_column=t.soft_delete_column or None, operations=list(t.operations),
        ) for t in response.tables]
        return cls(tables=tables, handlers=list(response.handlers), response=response)

    def table(self, name: str) -> TableSchema:
        """By full name (``"public.orders"``) or, when unambiguous, by table name alone."""
        matches = [t for t in self.tables if t.name == name] or \
            [t for t in self.tables if t.name.rsplit(".", 1)[-1] == name]
        if len(matches) != 1:
            raise KeyError(name)
        return matches[0]

    def to_dict(self) -> dict[str, Any]:
        return json_format.MessageToDict(self.response)


class _Options:
    """What both clients keep: default metadata and deadline, and how to open a channel."""

    def __init__(self, metadata: Metadata | None, timeout: float | None) -> None:
        items = metadata.items() if isinstance(metadata, Mapping) else (metadata or ())
        self._metadata = tuple((key, value) for key, value in items)
        self._timeout = timeout

    def call(self) -> dict[str, Any]:
        return {"metadata": self._metadata or None, "timeout": self._timeout}


class AsyncClient:
    """batchd over a grpc.aio channel; use as ``async with AsyncClient(target) as client``.

    ``metadata`` is sent with every call; ``timeout`` (seconds) is the default deadline of each
    call (None: none). ``credentials``: a ``grpc.ssl_channel_credentials()`` for TLS;
    ``options``: channel options such as ``("grpc.max_receive_message_length", n)``.
    """

    def __init__(self, target: str, *, metadata: Metadata | None = None,
                 timeout: float | None = None, credentials: Any = None,
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        self._options = _Options(metadata, timeout)
        self._channel = grpc.aio.secure_channel(target, credentials, options) if credentials \
            else grpc.aio.insecure_channel(target, options)
        self._stub = batch_pb2_grpc.BatchServiceStub(  # type: ignore[no-untyped-call]
            self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def execute(self, batch: Batch, *, mode: str | int = "atomic",
                      validate_only: bool = False, isolation: str | int | None = None,
                      read_only: bool = False, request_id: str | None = None) -> BatchResult:
        """Runs ``batch`` (see ``Batch.to_request`` for the options). Raises
        ``AtomicBatchError`` when an atomic batch fails, ``BatchdRpcError`` otherwise."""
        request = batch.to_request(mode=mode, validate_only=validate_only, isolation=isolation,
                                   read_only=read_only, request_id=request_id)
        return await self.execute_request(request)

    async def execute_request(self, request: batch_pb2.BatchExecuteRequest) -> BatchResult:
        """Sends a ready-made request as it is."""
        try:
            response = await self._stub.BatchExecute(request, **self._options.call())
        except grpc.RpcError as exc:
            raise rpc_error(exc) from exc
        return BatchResult.from_proto(response)

    async def schema(self) -> Schema:
        """The exposed tables and registered handlers."""
        try:
            response = await self._stub.GetSchema(batch_pb2.GetSchemaRequest(),
                                                  **self._options.call())
        except grpc.RpcError as exc:
            raise rpc_error(exc) from exc
        return Schema.from_proto(response)


class Client:
    """batchd over a blocking gRPC channel; the same methods as ``AsyncClient``. Use as
    ``with Client(target) as client``. Never call it from a thread running an event loop
    that the server (or anything the call waits for) needs."""

    def __init__(self, target: str, *, metadata: Metadata | None = None,
                 timeout: float | None = None, credentials: Any = None,
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        self._options = _Options(metadata, timeout)
        self._channel = grpc.secure_channel(target, credentials, options) if credentials \
            else grpc.insecure_channel(target, options)
        self._stub = batch_pb2_grpc.BatchServiceStub(  # type: ignore[no-untyped-call]
            self._channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def execute(self, batch: Batch, *, mode: str | int = "atomic", validate_only: bool = False,
                isolation: str | int | None = None, read_only: bool = False,
                request_id: str | None = None) -> BatchResult:
        """Runs ``batch``; see ``AsyncClient.execute``."""
        request = batch.to_request(mode=mode, validate_only=validate_only, isolation=isolation,
                                   read_only=read_only, request_id=request_id)
        return self.execute_request(request)

    def execute_request(self, request: batch_pb2.BatchExecuteRequest) -> BatchResult:
        try:
            response = self._stub.BatchExecute(request, **self._options.call())
        except grpc.RpcError as exc:
            raise rpc_error(exc) from exc
        return BatchResult.from_proto(response)

    def schema(self) -> Schema:
        try:
            response = self._stub.GetSchema(batch_pb2.GetSchemaRequest(),
                                            **self._options.call())
        except grpc.RpcError as exc:
            raise rpc_error(exc) from exc
        return Schema.from_proto(response)
