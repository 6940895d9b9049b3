"""What one BatchExecute or BatchStream leaves behind: its log line and its counts.

The servicer opens an observation around each call (``Observer.batch`` / ``Observer.stream``)
and tells it what happened (``answered``, ``failed``, each stream response ``sent``); leaving
the block without either means the call was cancelled. On the way out it

- logs one line on ``batchd.service``: request_id, principal (``anonymous`` without
  authentication), method, duration_ms, code, and per RPC: mode, operations and outcomes
  (BatchExecute); stream_id, table, chunks, rows_written, rows_rejected (BatchStream);
- counts ``batchd_operations_total{kind,outcome}`` from the answer, or from the outcomes a failed
  atomic batch carries in its details; operations of a batch refused whole count as NOT_RUN,
  those of a cancelled one as CANCELLED;
- counts ``batchd_rows_ingested_total{table}`` for committed rows only: an INDEPENDENT stream's
  acks (each acked chunk is committed), an ATOMIC stream's rows when its summary says it
  committed;
- keeps ``batchd_in_flight{rpc}`` while the call runs.

The RPC counts and latencies are the interceptor's (``batchd.rpc.interceptors``), for every RPC.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import grpc

from batchd.errors import BatchdError
from batchd.kinds.base import PlanContext
from batchd.metrics import CANCELLED, Metrics
from batchd.rpc.auth import current_principal
from batchd.rpc.interceptors import final_code
from batchd.v1 import batch_pb2

log = logging.getLogger("batchd.service")
SERVICE = "/" + batch_pb2.DESCRIPTOR.services_by_name["BatchService"].full_name + "/"
ANONYMOUS = "anonymous"
_MODE_NAMES = {number: name for name, number in batch_pb2.Mode.items()}


def principal_name() -> str:
    """The authenticated caller of the current RPC, or ``anonymous``."""
    principal = current_principal.get()
    return principal.name if principal is not None else ANONYMOUS


class Observer:
    def __init__(self, metrics: Metrics, plan_ctx: PlanContext) -> None:
        self.metrics = metrics
        self.plan_ctx = plan_ctx  # for the current catalog

    def batch(self, request: batch_pb2.BatchExecuteRequest, request_id: str,
              context: grpc.aio.ServicerContext | None = None) -> BatchSeen:
        return BatchSeen(self, request, request_id, context)

    def stream(self, request_id: str,
               context: grpc.aio.ServicerContext | None = None) -> StreamSeen:
        return StreamSeen(self, request_id, context)

    def table_label(self, name: str) -> str:
        """The qualified name, so "orders" and "public.orders" count together."""
        try:
            return self.plan_ctx.catalog.table(name, "header.table").qualified_name
        except BatchdError:
            return name


class _Seen:
    """Common part: in-flight gauge, timing, principal, final code, the log line."""

    rpc = ""

    def __init__(self, observer: Observer, request_id: str,
                 context: grpc.aio.ServicerContext | None) -> None:
        self.observer = observer
        self.request_id = request_id
        self.context = context
        self.error: BatchdError | None = None
        self.started = 0.0
        self.principal = ANONYMOUS

    def __enter__(self) -> Any:
        self.started = time.perf_counter()
        self.principal = principal_name()  # set by authentication before the method handler ran
        metrics = self.observer.metrics
        metrics.child(metrics.in_flight, self.rpc).inc()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        metrics = self.observer.metrics
        metrics.child(metrics.in_flight, self.rpc).dec()
        if self.error is not None:
            code = self.error.code.name
        elif exc is not None:  # cancelled, expired, or the response stream closed early
            code = final_code(self.context, exc) if self.context is not None else CANCELLED
        else:
            code = "OK"
        fields = self.finish(code)
        if not log.isEnabledFor(logging.INFO):  # counted; the line's fields are not built
            return
        log.info("%s %s", self.rpc, code, extra={
            "request_id": self.request_id, "principal": self.principal,
            "method": SERVICE + self.rpc,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
            "code": code, **fields})

    def failed(self, error: BatchdError) -> BatchdError:
        self.error = error
        return error

    def finish(self, code: str) -> dict[str, Any]:
        """Count what the call did; return its own fields for the log line."""
        raise NotImplementedError


class BatchSeen(_Seen):
    rpc = "BatchExecute"

    def __init__(self, observer: Observer, request: batch_pb2.BatchExecuteRequest,
                 request_id: str, context: grpc.aio.ServicerContext | None) -> None:
        super().__init__(observer, request_id, context)
        self.request = request
        self.response: batch_pb2.BatchExecuteResponse | None = None

    def __enter__(self) -> BatchSeen:
        return super().__enter__()  # type: ignore[no-any-return]

    def answered(self, response: batch_pb2.BatchExecuteResponse,
                 ) -> batch_pb2.BatchExecuteResponse:
        self.response = response
        return response

    def finish(self, code: str) -> dict[str, Any]:
        count = self.observer.metrics.count_operations
        if self.response is not None and self.response.replayed:
            # The stored answer of an earlier request: nothing ran again, nothing is counted.
            outcomes = {"REPLAYED": len(self.request.operations)}
        elif self.response is not None:
            outcomes = count(self.request, self.response)
        elif self.error is not None:
            # A failed atomic batch carries every operation's outcome in its details.
            outcomes = count(self.request, next(
                (d for d in self.error.extra_details
                 if isinstance(d, batch_pb2.BatchExecuteResponse)), None))
        else:
            outcomes = count(self.request, None, CANCELLED)
        mode = self.request.mode or batch_pb2.MODE_ATOMIC
        return {"mode": _MODE_NAMES.get(mode, mode),
                "operations": len(self.request.operations), "outcomes": outcomes}


class StreamSeen(_Seen):
    rpc = "BatchStream"

    def __init__(self, observer: Observer, request_id: str,
                 context: grpc.aio.ServicerContext | None) -> None:
        super().__init__(observer, request_id, context)
        self.header: batch_pb2.StreamHeader | None = None
        self.stream_id = ""
        self.chunks = self.rows_written = self.rows_rejected = 0

    def __enter__(self) -> StreamSeen:
        return super().__enter__()  # type: ignore[no-any-return]

    async def requests(self, requests: AsyncIterator[batch_pb2.BatchStreamRequest],
                       ) -> AsyncIterator[batch_pb2.BatchStreamRequest]:
        """The same requests; notes the header on the way past."""
        async for request in requests:
            if self.header is None and request.WhichOneof("kind") == "header":
                self.header = request.header
            yield request

    def sent(self, response: batch_pb2.BatchStreamResponse) -> batch_pb2.BatchStreamResponse:
        kind = response.WhichOneof("kind")
        if kind == "opened":
            self.stream_id = response.opened.stream_id
        elif kind == "ack":
            ack = response.ack
            if ack.duplicate:  # written before: counted then (its ack repeats the figures)
                return response
            self.chunks += 1
            self.rows_written += ack.rows_written
            self.rows_rejected += len(ack.rejected)
            if not self.atomic:  # committed before its ack was sent
                self._ingested(ack.rows_written)
        elif kind == "summary" and self.atomic and response.summary.committed:
            self._ingested(response.summary.rows_written)
        return response

    @property
    def atomic(self) -> bool:
        return self.header is None or self.header.mode != batch_pb2.MODE_INDEPENDENT

    def _ingested(self, rows: int) -> None:
        if rows and self.header is not None and self.header.table:
            self.observer.metrics.rows_ingested.labels(
                self.observer.table_label(self.header.table)).inc(rows)

    def finish(self, code: str) -> dict[str, Any]:
        header = self.header
        return {"stream_id": self.stream_id, "table": header.table if header else "",
                "mode": "MODE_INDEPENDENT" if not self.atomic else "MODE_ATOMIC",
                "chunks": self.chunks, "rows_written": self.rows_written,
                "rows_rejected": self.rows_rejected}
