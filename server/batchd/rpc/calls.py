"""The service's behaviour, apart from any transport: what BatchExecute, BatchStream and
GetSchema do, for the gRPC servicer (batchd.rpc.service) and the HTTP edge (batchd.http.connect,
batchd.http.ingest) alike, so that both answer the same request the same way.

A transport hands each call a ``Call``: the caller's request id, its deadline, its principal
(authenticated by the edge), and ``admitted`` — what the transport does once the call is
admitted (gRPC sends its response headers then, so that a call refused before is one gRPC's
retry policy may send to another replica). Failures leave as ``BatchdError`` (already
translated, logged and counted by the observer); the edge only puts them on its wire
(``to_rpc_status`` for gRPC, the same Status as Connect error JSON for HTTP).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

from batchd.batch.executor import Executor
from batchd.batch.plan import plan_request
from batchd.describe import describe
from batchd.errors import DeadlineExceeded, translate
from batchd.grants import Grants
from batchd.kinds.base import PlanContext
from batchd.metrics import Metrics
from batchd.principals import Principal
from batchd.rpc import decode
from batchd.rpc.admission import Admission
from batchd.rpc.observe import Observer
from batchd.stream.session import StreamServices, StreamSession
from batchd.v1 import batch_pb2

REQUEST_ID_HEADER = "x-request-id"


def request_id_from(pairs: Iterable[tuple[str, Any]]) -> str:
    """The caller's x-request-id if it sent a sane one (metadata or HTTP headers, lower-case
    keys), else a new one."""
    for key, value in pairs:
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex


class Call(Protocol):
    """One call as the transport sees it."""

    request_id: str
    principal: Principal | None  # None: authentication is off
    context: Any  # grpc.aio.ServicerContext for gRPC (its final code), else None

    def time_remaining(self) -> float | None:
        """Seconds until the caller's deadline; None: it set none."""

    async def admitted(self) -> None:
        """The call is admitted: the transport may commit to answering it here."""


def deadline_of(call: Call, most_seconds: float) -> float:
    """The call's deadline as event-loop time: the caller's, but never later than
    ``most_seconds`` from now (``max_batch_seconds``), so every call has a bound."""
    now = asyncio.get_running_loop().time()
    remaining = call.time_remaining()
    if remaining is None:
        return now + most_seconds
    return now + min(float(remaining), most_seconds)


class Calls:
    """BatchExecute, BatchStream and GetSchema, whatever carried them."""

    def __init__(self, executor: Executor, plan_ctx: PlanContext, streams: StreamServices,
                 observer: Observer | None = None, admission: Admission | None = None) -> None:
        self.admission = admission or Admission(plan_ctx.settings)
        self.executor = executor
        self.plan_ctx = plan_ctx
        self.streams = streams
        # Log lines and counts of each call (batchd.rpc.observe); its own metrics if none given.
        self.observer = observer or Observer(Metrics(), plan_ctx)
        self.grants = Grants(executor.pool)  # what each database role may use (GetSchema)

    async def batch_execute(self, raw: decode.Raw | batch_pb2.BatchExecuteRequest,
                            call: Call) -> batch_pb2.BatchExecuteResponse:
        parsed = await decode.parse(raw, batch_pb2.BatchExecuteRequest)
        malformed = decode.problem(parsed)
        request = parsed if isinstance(parsed, batch_pb2.BatchExecuteRequest) \
            else batch_pb2.BatchExecuteRequest()
        with self.observer.batch(request, call.request_id, call.context) as seen:
            try:
                if malformed is not None:
                    raise malformed
                with self.admission.admit("batch"):
                    # Only now: a call refused before any header is one gRPC's retry policy
                    # may send to another replica (it was not "committed").
                    await call.admitted()
                    plan = await plan_request(request, self.plan_ctx, call.principal)
                    plan.deadline = deadline_of(call, self.plan_ctx.settings.max_batch_seconds)
                    try:
                        async with asyncio.timeout_at(plan.deadline):
                            response = await self.executor.execute(plan, call.request_id)
                    except TimeoutError:
                        raise DeadlineExceeded(
                            "the batch did not finish before its deadline (the caller's, or "
                            "max_batch_seconds); " + (
                                "nothing of it was committed" if plan.atomic else
                                "operations that finished before it stay committed")) from None
                    return seen.answered(response)
            except Exception as exc:
                error = seen.failed(translate(exc, call.request_id))
        raise error

    async def batch_stream(self, requests: AsyncIterator[batch_pb2.BatchStreamRequest],
                           call: Call) -> AsyncIterator[batch_pb2.BatchStreamResponse]:
        """The stream's responses; a failure ends it with a (translated) ``BatchdError``."""
        with self.observer.stream(call.request_id, call.context) as seen:
            try:
                self.admission.check_open()  # draining: refused before waiting for a header
                session = StreamSession(self.streams, call.request_id, call.principal)
                checked = seen.requests(decode.checked(requests))
                async for response in session.run(checked, call.admitted):
                    yield seen.sent(response)
                return
            except Exception as exc:
                error = seen.failed(translate(exc, call.request_id))
        raise error

    async def get_schema(self, raw: decode.Raw | batch_pb2.GetSchemaRequest,
                         call: Call) -> batch_pb2.GetSchemaResponse:
        principal = call.principal
        catalog = self.plan_ctx.catalog
        try:
            decode.check(await decode.parse(raw, batch_pb2.GetSchemaRequest))
            grants = None
            if principal is not None and principal.role:
                deadline = deadline_of(call, self.plan_ctx.settings.max_batch_seconds)
                grants = await self.grants.of(catalog, principal.role, deadline)
        except Exception as exc:
            raise translate(exc, call.request_id) from None
        return describe(catalog, principal, grants)
