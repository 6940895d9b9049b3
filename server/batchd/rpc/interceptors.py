"""Server interceptors. ``MetricsInterceptor`` counts every RPC by method and final status.

grpc.aio interceptors only see the call before the method handler runs, so the interceptor wraps
the method handler's behaviour (``batchd.rpc.shapes.wrap``, for all four shapes) and reads the
final status when it ends:

- returned normally: ``context.code()`` if the method handler set one, else OK;
- aborted (``context.abort`` / ``abort_with_status`` raise ``AbortError``): ``context.code()``,
  which the abort set to the code the caller receives;
- cancelled (the caller went away, its deadline passed, the server stopped; a response stream
  closed early): DEADLINE_EXCEEDED when no time is left, else CANCELLED;
- any other exception: UNKNOWN, which is what grpc sends for it.

A caller's cancel can also reach a streaming method handler first as the end of its request
stream (grpc.aio ends it the same way as a half-close); the method handler's answer to that —
for an ATOMIC BatchStream, FAILED_PRECONDITION — is then the code counted.

It should be the first interceptor, so that the RPCs the others refuse (authentication) are
counted too. Methods the server does not have are not counted (grpc answers UNIMPLEMENTED
before any method handler exists), which also keeps the ``method`` label bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc

from batchd.errors import cancelled_code
from batchd.metrics import Metrics
from batchd.rpc import shapes

_Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    """The name of the status code the caller receives (see the module docstring)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        pass
    elif error is None:
        code = grpc.StatusCode.OK
    elif isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        code = cancelled_code(expired)
    else:
        code = grpc.StatusCode.UNKNOWN
    return str(code.name)


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """``batchd_rpcs_total{method,code}`` and ``batchd_rpc_duration_seconds{method}``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # The wrapped method handler of each method, by the method handler it wraps: made
        # once, not per call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation: _Continuation,
                                handler_call_details: grpc.HandlerCallDetails,
                                ) -> grpc.RpcMethodHandler | None:
        rpc_handler = await continuation(handler_call_details)
        if rpc_handler is None:
            return None
        method: str = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is rpc_handler:
            return known[1]
        wrapped = shapes.wrap(rpc_handler,
                              lambda context, _requests: self._observed(method, context))
        self._wrapped[method] = (rpc_handler, wrapped)
        return wrapped

    @asynccontextmanager
    async def _observed(self, method: str,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Around one call: counts it, with the code it ends with, and times it."""
        started = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            self._record(method, context, started, exc)
            raise
        self._record(method, context, started, None)

    def _record(self, method: str, context: grpc.aio.ServicerContext, started: float,
                error: BaseException | None) -> None:
        metrics = self.metrics
        metrics.child(metrics.rpcs, method, final_code(context, error)).inc()
        metrics.child(metrics.rpc_duration, method).observe(time.perf_counter() - started)
