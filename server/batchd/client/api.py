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

Results (``batchd.client.results``): ``execute`` returns a ``BatchResult`` (``committed``,
``attempts``, one ``OperationOutcome`` per operation, indexable by id, ``OpRef`` or position).

Errors are the one tree of ``batchd.errors``, shared with the server; ``rpc_error`` translates
any ``grpc.RpcError``::

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

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import grpc

from batchd.client.builder import Batch, OpRef
from batchd.client.results import (
    AtomicBatchError,
    BatchResult,
    ColumnSchema,
    OperationOutcome,
    Schema,
    TableSchema,
    rpc_error,
)
from batchd.errors import BatchdError, BatchdRpcError, FieldViolation
from batchd.v1 import batch_pb2, batch_pb2_grpc

__all__ = ["AsyncClient", "AtomicBatchError", "Batch", "BatchResult", "BatchdError",
           "BatchdRpcError", "Client", "ColumnSchema", "FieldViolation", "OpRef",
           "OperationOutcome", "Schema", "TableSchema", "rpc_error"]

Metadata = Sequence[tuple[str, str]] | Mapping[str, str]


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
