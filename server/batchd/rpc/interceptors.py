"""Server interceptors. ``MetricsInterceptor`` counts every RPC by method and final status.

grpc.aio interceptors only see the call before the handler runs, so the interceptor wraps the
handler's behaviour (all four shapes: unary or streaming requests and responses) and reads the
final status when it ends:

- returned normally: ``context.code()`` if the handler set one, else OK;
- aborted (``context.abort`` / ``abort_with_status`` raise ``AbortError``): ``context.code()``,
  which the abort set to the code the caller receives;
- cancelled (the caller went away, its deadline passed, the server stopped; a response stream
  closed early): DEADLINE_EXCEEDED when no time is left, else CANCELLED;
- any other exception: UNKNOWN, which is what grpc sends for it.

A caller's cancel can also reach a streaming handler first as the end of its request stream
(grpc.aio ends it the same way as a half-close); the handler's answer to that — for an ATOMIC
BatchStream, FAILED_PRECONDITION — is then the code counted.

It should be the first interceptor, so that the RPCs the others refuse (authentication) are
counted too. Methods the server does not have are not counted (grpc answers UNIMPLEMENTED
before any handler exists), which also keeps the ``method`` label bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from batchd.errors import cancelled_code
from batchd.metrics import Metrics

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
        # The wrapped handler of each method, by the handler it wraps: made once, not per call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation: _Continuation,
                                handler_call_details: grpc.HandlerCallDetails,
                                ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = _wrap(handler, lambda context, started, error: self._record(
            method, context, started, error))
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _record(self, method: str, context: grpc.aio.ServicerContext, started: float,
                error: BaseException | None) -> None:
        metrics = self.metrics
        metrics.child(metrics.rpcs, method, final_code(context, error)).inc()
        metrics.child(metrics.rpc_duration, method).observe(time.perf_counter() - started)


_Done = Callable[[grpc.aio.ServicerContext, float, BaseException | None], None]


def _wrap(handler: grpc.RpcMethodHandler, done: _Done) -> grpc.RpcMethodHandler:
    """The same handler, calling ``done(context, started, error)`` once when the call ends."""
    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary, done), **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_unary(handler.stream_unary, done), **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_streaming(handler.unary_stream, done),
                                                    **kwargs)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(_streaming(handler.stream_stream, done),
                                                     **kwargs)
    return handler  # pragma: no cover - grpc has no fifth shape


def _unary(behavior: Callable[..., Any], done: _Done) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            result = behavior(request, context)
            if isinstance(result, Awaitable):
                result = await result
        except BaseException as exc:
            done(context, started, exc)
            raise
        done(context, started, None)
        return result

    return wrapper


def _streaming(behavior: Callable[..., Any], done: _Done) -> Callable[..., AsyncIterator[Any]]:
    """Response streams: the handler is an async generator, or a coroutine that writes with
    ``context.write`` (then this generator yields nothing; grpc accepts both shapes)."""

    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        try:
            result = behavior(request, context)
            if isinstance(result, AsyncIterator):
                async for response in result:
                    yield response
            elif isinstance(result, Awaitable):
                await result
            else:  # a synchronous iterator
                for response in result:
                    yield response
        except BaseException as exc:
            done(context, started, exc)
            raise
        done(context, started, None)

    return wrapper
