"""The gRPC servicer: thin. Requests go to the planner and the executor; errors leave through
``to_rpc_status``, the one place that shapes them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import grpc
from grpc_status import rpc_status

from batchd.batch.executor import Executor
from batchd.batch.plan import plan_request
from batchd.describe import describe
from batchd.errors import DeadlineExceeded, to_rpc_status, translate
from batchd.grants import Grants
from batchd.kinds.base import PlanContext
from batchd.metrics import Metrics
from batchd.rpc import decode
from batchd.rpc.admission import Admission
from batchd.rpc.auth import current_principal, let_the_client_finish
from batchd.rpc.observe import Observer
from batchd.stream.session import StreamServices, StreamSession
from batchd.v1 import batch_pb2, batch_pb2_grpc

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = "x-request-id"


def deadline_of(context: grpc.aio.ServicerContext, most_seconds: float) -> float:
    """The call's deadline as event-loop time: the caller's, but never later than
    ``most_seconds`` from now (``max_batch_seconds``), so every call has a bound."""
    now = asyncio.get_running_loop().time()
    remaining = context.time_remaining()
    if remaining is None:
        return now + most_seconds
    return now + min(float(remaining), most_seconds)


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's x-request-id if it sent a sane one, else a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex


class BatchService(batch_pb2_grpc.BatchServiceServicer):
    def __init__(self, executor: Executor, plan_ctx: PlanContext, streams: StreamServices,
                 observer: Observer | None = None, admission: Admission | None = None) -> None:
        self.admission = admission or Admission(plan_ctx.settings)
        self.executor = executor
        self.plan_ctx = plan_ctx
        self.streams = streams
        # Log lines and counts of each call (batchd.rpc.observe); its own metrics if none given.
        self.observer = observer or Observer(Metrics(), plan_ctx)
        self.grants = Grants(executor.pool)  # what each database role may use (GetSchema)

    async def BatchExecute(self, raw: decode.Raw,
                           context: grpc.aio.ServicerContext) -> batch_pb2.BatchExecuteResponse:
        request_id = request_id_of(context)
        parsed = await decode.parse(raw, batch_pb2.BatchExecuteRequest)
        malformed = decode.problem(parsed)
        request = parsed if isinstance(parsed, batch_pb2.BatchExecuteRequest) \
            else batch_pb2.BatchExecuteRequest()
        with self.observer.batch(request, request_id, context) as seen:
            try:
                if malformed is not None:
                    raise malformed
                with self.admission.admit("batch"):
                    # Only now: a call refused before any header is one gRPC's retry policy
                    # may send to another replica (it was not "committed").
                    await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
                    plan = await plan_request(request, self.plan_ctx, current_principal.get())
                    plan.deadline = deadline_of(context, self.plan_ctx.settings.max_batch_seconds)
                    try:
                        async with asyncio.timeout_at(plan.deadline):
                            response = await self.executor.execute(plan, request_id)
                    except TimeoutError:
                        raise DeadlineExceeded(
                            "the batch did not finish before its deadline (the caller's, or "
                            "max_batch_seconds); " + (
                                "nothing of it was committed" if plan.atomic else
                                "operations that finished before it stay committed")) from None
                    return seen.answered(response)
            except Exception as exc:
                error = seen.failed(translate(exc, request_id))
        await context.abort_with_status(rpc_status.to_status(to_rpc_status(error)))
        raise AssertionError("abort_with_status returned")  # pragma: no cover

    async def BatchStream(self, request_iterator: AsyncIterator[batch_pb2.BatchStreamRequest],
                          context: grpc.aio.ServicerContext,
                          ) -> AsyncIterator[batch_pb2.BatchStreamResponse]:
        request_id = request_id_of(context)

        async def admitted() -> None:
            await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))

        with self.observer.stream(request_id, context) as seen:
            try:
                self.admission.check_open()  # draining: refused before waiting for a header
                session = StreamSession(self.streams, request_id, current_principal.get())
                requests = seen.requests(decode.checked(request_iterator))
                async for response in session.run(requests, admitted):
                    yield seen.sent(response)
                return
            except Exception as exc:
                error = seen.failed(translate(exc, request_id))
        # A client may still be writing (chunks sent ahead): read what it sends first, or a
        # grpc.aio client may see INTERNAL instead of this status (rpc.auth.let_the_client_finish).
        await let_the_client_finish(request_iterator)
        await context.abort_with_status(rpc_status.to_status(to_rpc_status(error)))

    async def GetSchema(self, raw: decode.Raw,
                        context: grpc.aio.ServicerContext) -> batch_pb2.GetSchemaResponse:
        principal = current_principal.get()
        catalog = self.plan_ctx.catalog
        try:
            decode.check(await decode.parse(raw, batch_pb2.GetSchemaRequest))
            grants = None
            if principal is not None and principal.role:
                deadline = deadline_of(context, self.plan_ctx.settings.max_batch_seconds)
                grants = await self.grants.of(catalog, principal.role, deadline)
        except Exception as exc:
            error = translate(exc, request_id_of(context))
            await context.abort_with_status(rpc_status.to_status(to_rpc_status(error)))
            raise AssertionError("abort_with_status returned") from None  # pragma: no cover
        return describe(catalog, principal, grants)

