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

Defaults that make a transient failure a non-event:

- a deadline of ``timeout`` seconds (30) on every call, covering all its retries (``None``: no
  deadline, explicitly);
- ``execute`` gives every call its own ``request_id`` (``uuid4().hex``, kept across that call's
  retries) unless one is given, so that a retry after a lost reply is replayed, not run again
  (``request_id=False``: none; ``validate_only`` batches get none, they store nothing);
- retries with exponential backoff and full jitter (``batchd.client.retry``: which failures,
  and why those are safe), honouring the server's RetryInfo; ``retry=None`` turns them off and
  ``on_retry`` sees each one;
- keepalive, the published service config (round-robin over several targets) and its
  retry policy below ours, for GetSchema (``batchd.client.channel``);
- ``ingest``: BatchStream with chunking, flow control and resume (``batchd.client.ingest``).

Results (``batchd.client.results``): ``execute`` returns a ``BatchResult`` (``committed``,
``attempts``, ``replayed``, one ``OperationOutcome`` per operation, indexable by id, ``OpRef``
or position).

Errors are the one tree of ``batchd.vocabulary``, shared with the server; ``rpc_error`` translates
any ``grpc.RpcError``::

    BatchdError
     └── BatchdRpcError        the RPC failed: code, message, reason, error_info, field_violations
          └── AtomicBatchError the status details carry every operation's outcome (``outcomes``)

An ATOMIC batch that fails raises ``AtomicBatchError``, whether it failed while running or was
refused before anything ran (INVALID_ARGUMENT with per-operation outcomes). An INDEPENDENT
batch does not raise for failed operations: the RPC succeeded, and each ``OperationOutcome``
says what happened (``BatchResult.ok`` is whether all succeeded). Anything without such details
(an unreachable server, a request refused as a whole) is a plain ``BatchdRpcError``. What is
raised after retries is the last attempt's error.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from types import EllipsisType, TracebackType
from typing import Any, Self, Unpack

from batchd.client import channel as channels
from batchd.client import retry
from batchd.client.builder import Batch, OpRef, all_of, any_of, not_
from batchd.client.ingest import AckedChunk, IngestOptions, IngestResult, RejectedRow, Source
from batchd.client.ingest import ingest as run_ingest
from batchd.client.results import (
    ArgumentSchema,
    AtomicBatchError,
    BatchResult,
    ColumnSchema,
    FunctionSchema,
    OperationOutcome,
    Schema,
    TableSchema,
    rpc_error,
)
from batchd.client.retry import RetryEvent, RetryHook, RetryPolicy
from batchd.v1 import batch_pb2, batch_pb2_grpc
from batchd.vocabulary import BatchdError, BatchdRpcError, FieldViolation

__all__ = ["AckedChunk", "ArgumentSchema", "AsyncClient", "AtomicBatchError", "Batch",
           "BatchResult", "BatchdError", "BatchdRpcError", "Client", "ColumnSchema",
           "FieldViolation", "FunctionSchema", "IngestResult", "OpRef", "OperationOutcome",
           "RejectedRow", "RetryEvent", "RetryPolicy", "Schema", "TableSchema", "all_of",
           "any_of", "not_", "rpc_error"]

Metadata = Sequence[tuple[str, str]] | Mapping[str, str]
#: A call's ``timeout``: seconds, None (no deadline), or ``...`` (the client's default).
Timeout = float | None | EllipsisType
DEFAULT_TIMEOUT = 30.0


class _Settings:
    """What both clients keep: where to connect and how, default metadata, deadline, retries."""

    def __init__(self, target: str | Sequence[str] | None, targets: Sequence[str] | None,
                 metadata: Metadata | None, timeout: float | None, credentials: Any,
                 options: Sequence[tuple[str, Any]], retry_policy: RetryPolicy | None,
                 on_retry: RetryHook | None, keepalive_seconds: float | None,
                 client_health_check: bool | None) -> None:
        if (target is None) == (targets is None):
            raise TypeError("give one of target and targets")
        chosen = target if target is not None else targets
        assert chosen is not None
        self.target = channels.resolve_target(chosen)
        items = metadata.items() if isinstance(metadata, Mapping) else (metadata or ())
        self.metadata = tuple((key, value) for key, value in items)
        self.timeout = timeout
        self.credentials = credentials
        balancing = channels.balances_itself(self.target) if client_health_check is None \
            else client_health_check
        self.options = channels.channel_options(options, keepalive_seconds, balancing=balancing)
        self.retry = retry_policy or retry.NO_RETRY
        self.on_retry = on_retry

    def timeout_of(self, timeout: Timeout) -> float | None:
        return self.timeout if isinstance(timeout, EllipsisType) else timeout

    def retried(self, method: str, replay_safe: bool, timeout: Timeout) -> dict[str, Any]:
        return {"method": method, "policy": self.retry, "replay_safe": replay_safe,
                "seconds": self.timeout_of(timeout), "on_retry": self.on_retry}


def _request_id(request_id: str | bool | None, validate_only: bool) -> str | None:
    """The id ``execute`` sends: the one given; none for False or validate_only (which stores
    nothing); else a new one for this call."""
    if isinstance(request_id, str):
        return request_id or None
    if request_id is False or validate_only:
        return None
    return uuid.uuid4().hex


class AsyncClient:
    """batchd over a grpc.aio channel; use as ``async with AsyncClient(target) as client``.

    ``target``: ``"host:port"`` or any gRPC target; ``targets`` (or a list as ``target``):
    several IP addresses, spread round-robin (see ``batchd.client.channel.resolve_target``).
    ``metadata`` is sent with every call; ``timeout`` (seconds, default 30) is each call's
    deadline, retries included (None: no deadline). ``retry``: a ``RetryPolicy`` (None: no
    retries); ``on_retry(event)`` is called (and awaited, if it returns an awaitable) before
    each retry's wait. ``credentials``: a ``grpc.ssl_channel_credentials()`` for TLS;
    ``options``: channel options, over the defaults of ``channel_options``;
    ``keepalive_seconds``: see ``batchd.client.channel`` (None: no keepalive pings).
    ``client_health_check``: gRPC's client-side health checking, so that a draining replica
    leaves the pick (``batchd.client.channel.HEALTH_CHECK_CONFIG``); None: on for several
    addresses (the client balances itself), off for one (maybe a load balancer); True for a
    headless ``dns:///`` name of the replicas.
    """

    def __init__(self, target: str | Sequence[str] | None = None, *,
                 targets: Sequence[str] | None = None, metadata: Metadata | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT, credentials: Any = None,
                 options: Sequence[tuple[str, Any]] = (),
                 retry: RetryPolicy | None = retry.DEFAULT, on_retry: RetryHook | None = None,
                 keepalive_seconds: float | None = channels.KEEPALIVE_SECONDS,
                 client_health_check: bool | None = None) -> None:
        self._settings = _Settings(target, targets, metadata, timeout, credentials, options,
                                   retry, on_retry, keepalive_seconds, client_health_check)
        self._channel = channels.aio_channel(self._settings.target, credentials,
                                             self._settings.options)
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
                      read_only: bool = False, request_id: str | bool | None = None,
                      timeout: Timeout = ...,  # noqa: ASYNC109 (the gRPC deadline)
                      ) -> BatchResult:
        """Runs ``batch`` (see ``Batch.to_request`` for the options), retrying what is safe to
        retry. ``request_id``: None (a new one for this call), an id of yours, or False (none:
        then a lost connection is not retried, since the batch may have run). ``timeout``
        overrides the client's for this call. Raises ``AtomicBatchError`` when an atomic batch
        fails, ``BatchdRpcError`` otherwise."""
        request = batch.to_request(mode=mode, validate_only=validate_only, isolation=isolation,
                                   read_only=read_only,
                                   request_id=_request_id(request_id, validate_only))
        return await self.execute_request(request, timeout=timeout)

    async def execute_request(self, request: batch_pb2.BatchExecuteRequest, *,
                              timeout: Timeout = ...,  # noqa: ASYNC109 (the gRPC deadline)
                              ) -> BatchResult:
        """Sends a ready-made request as it is (no request id is added), with the retries its
        fields make safe (``batchd.client.retry.replay_safe``)."""
        settings = self._settings

        async def send(remaining: float | None) -> batch_pb2.BatchExecuteResponse:
            response: batch_pb2.BatchExecuteResponse = await self._stub.BatchExecute(
                request, metadata=settings.metadata or None, timeout=remaining)
            return response

        response = await retry.call_async(
            send, **settings.retried("BatchExecute", retry.replay_safe(request), timeout))
        return BatchResult.from_proto(response)

    async def schema(self, *,
                     timeout: Timeout = ...,  # noqa: ASYNC109 (the gRPC deadline)
                     ) -> Schema:
        """The exposed tables and SQL functions, and the registered handlers."""
        settings = self._settings

        async def send(remaining: float | None) -> batch_pb2.GetSchemaResponse:
            response: batch_pb2.GetSchemaResponse = await self._stub.GetSchema(
                batch_pb2.GetSchemaRequest(), metadata=settings.metadata or None,
                timeout=remaining)
            return response

        response = await retry.call_async(send, **settings.retried("GetSchema", True, timeout))
        return Schema.from_proto(response)

    async def ingest(self, table: str, source: Source,
                     **options: Unpack[IngestOptions]) -> IngestResult:
        """Streams ``source`` into ``table`` over BatchStream: rows (an iterable or async
        iterable of mappings), columns (a mapping of column name to values), CSV (a path,
        a binary file or bytes) or Arrow (a pyarrow table or reader, a pandas or polars
        DataFrame, a Parquet or Arrow file), in chunks, resumed after a lost connection. See
        ``batchd.client.ingest.ingest`` for the options and what is guaranteed."""
        settings = self._settings
        return await run_ingest(self._stub, table, source, metadata=settings.metadata,
                                policy=settings.retry, on_retry=settings.on_retry, **options)


class Client:
    """batchd over a blocking gRPC channel; the same methods and defaults as ``AsyncClient``.
    Use as ``with Client(target) as client``. Never call it from a thread running an event loop
    that the server (or anything the call waits for) needs."""

    def __init__(self, target: str | Sequence[str] | None = None, *,
                 targets: Sequence[str] | None = None, metadata: Metadata | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT, credentials: Any = None,
                 options: Sequence[tuple[str, Any]] = (),
                 retry: RetryPolicy | None = retry.DEFAULT, on_retry: RetryHook | None = None,
                 keepalive_seconds: float | None = channels.KEEPALIVE_SECONDS,
                 client_health_check: bool | None = None) -> None:
        def twin() -> AsyncClient:  # for ingest: the same settings over a grpc.aio channel
            return AsyncClient(target, targets=targets, metadata=metadata, timeout=timeout,
                               credentials=credentials, options=options, retry=retry,
                               on_retry=on_retry, keepalive_seconds=keepalive_seconds,
                               client_health_check=client_health_check)

        self._twin = twin
        self._settings = _Settings(target, targets, metadata, timeout, credentials, options,
                                   retry, on_retry, keepalive_seconds, client_health_check)
        self._channel = channels.sync_channel(self._settings.target, credentials,
                                              self._settings.options)
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
                request_id: str | bool | None = None, timeout: Timeout = ...) -> BatchResult:
        """Runs ``batch``; see ``AsyncClient.execute``."""
        request = batch.to_request(mode=mode, validate_only=validate_only, isolation=isolation,
                                   read_only=read_only,
                                   request_id=_request_id(request_id, validate_only))
        return self.execute_request(request, timeout=timeout)

    def execute_request(self, request: batch_pb2.BatchExecuteRequest, *,
                        timeout: Timeout = ...) -> BatchResult:
        """See ``AsyncClient.execute_request``."""
        settings = self._settings

        def send(remaining: float | None) -> batch_pb2.BatchExecuteResponse:
            response: batch_pb2.BatchExecuteResponse = self._stub.BatchExecute(
                request, metadata=settings.metadata or None, timeout=remaining)
            return response

        response = retry.call_sync(
            send, **settings.retried("BatchExecute", retry.replay_safe(request), timeout))
        return BatchResult.from_proto(response)

    def schema(self, *, timeout: Timeout = ...) -> Schema:
        settings = self._settings

        def send(remaining: float | None) -> batch_pb2.GetSchemaResponse:
            response: batch_pb2.GetSchemaResponse = self._stub.GetSchema(
                batch_pb2.GetSchemaRequest(), metadata=settings.metadata or None,
                timeout=remaining)
            return response

        return Schema.from_proto(retry.call_sync(send,
                                                 **settings.retried("GetSchema", True, timeout)))

    def ingest(self, table: str, source: Source, **options: Unpack[IngestOptions]
               ) -> IngestResult:
        """``AsyncClient.ingest``, run to completion on a private event loop in this thread
        (with a channel of its own, closed at the end); ``on_ack`` runs there too. Not from
        a thread that runs an event loop: use ``AsyncClient`` there."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("Client.ingest cannot run in a thread whose event loop is "
                               "running; use AsyncClient.ingest")

        async def run() -> IngestResult:
            async with self._twin() as client:
                return await client.ingest(table, source, **options)

        return asyncio.run(run())
