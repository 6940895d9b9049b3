"""The gRPC servicer: thin. Each call goes to the transport-neutral behaviour
(batchd.rpc.calls, which the HTTP edge shares); errors leave through ``to_rpc_status``, the one
place that shapes them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NoReturn

import grpc
from grpc_status import rpc_status

from batchd.batch.executor import Executor
from batchd.errors import BatchdError, to_rpc_status
from batchd.kinds.base import PlanContext
from batchd.principals import Principal
from batchd.rpc import decode
from batchd.rpc.admission import Admission
from batchd.rpc.auth import current_principal, let_the_client_finish
from batchd.rpc.calls import REQUEST_ID_HEADER, Calls, request_id_from
from batchd.rpc.observe import Observer
from batchd.stream.session import StreamServices
from batchd.v1 import batch_pb2, batch_pb2_grpc


class GrpcCall:
    """A gRPC call as batchd.rpc.calls sees it."""

    __slots__ = ("context", "principal", "request_id")

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self.context = context
        self.request_id = request_id_from(context.invocation_metadata() or ())
        self.principal: Principal | None = current_principal.get()

    def time_remaining(self) -> float | None:
        remaining = self.context.time_remaining()
        return None if remaining is None else float(remaining)

    async def admitted(self) -> None:
        await self.context.send_initial_metadata(((REQUEST_ID_HEADER, self.request_id),))


async def _abort(context: grpc.aio.ServicerContext, error: BatchdError) -> NoReturn:
    await context.abort_with_status(rpc_status.to_status(to_rpc_status(error)))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


class BatchService(batch_pb2_grpc.BatchServiceServicer):
    def __init__(self, executor: Executor, plan_ctx: PlanContext, streams: StreamServices,
                 observer: Observer | None = None, admission: Admission | None = None) -> None:
        self.calls = Calls(executor, plan_ctx, streams, observer, admission)

    async def BatchExecute(self, raw: decode.Raw,
                           context: grpc.aio.ServicerContext) -> batch_pb2.BatchExecuteResponse:
        try:
            return await self.calls.batch_execute(raw, GrpcCall(context))
        except BatchdError as error:
            await _abort(context, error)

    async def BatchStream(self, request_iterator: AsyncIterator[batch_pb2.BatchStreamRequest],
                          context: grpc.aio.ServicerContext,
                          ) -> AsyncIterator[batch_pb2.BatchStreamResponse]:
        try:
            async for response in self.calls.batch_stream(request_iterator, GrpcCall(context)):
                yield response
            return
        except BatchdError as exc:
            error = exc
        # A client may still be writing (chunks sent ahead): read what it sends first, or a
        # grpc.aio client may see INTERNAL instead of this status (rpc.auth.let_the_client_finish).
        await let_the_client_finish(request_iterator)
        await _abort(context, error)

    async def GetSchema(self, raw: decode.Raw,
                        context: grpc.aio.ServicerContext) -> batch_pb2.GetSchemaResponse:
        try:
            return await self.calls.get_schema(raw, GrpcCall(context))
        except BatchdError as error:
            await _abort(context, error)
