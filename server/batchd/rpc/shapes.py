"""The four shapes of a gRPC method, handled in one place.

A grpc method handler carries one behaviour of four shapes: unary-unary, unary-stream,
stream-unary or stream-stream (a request stream or not, a response stream or not). batchd builds
its method handlers here (``method_handler``: batchd.rpc.decode registers BatchService through
it) and wraps them here (``wrap``: the metrics and authentication interceptors run their work
around each call through it), so that no other module tells the shapes apart.

A behaviour that streams responses may be an async generator, a coroutine that writes with
``context.write`` (then the wrapped behaviour yields nothing), or a plain iterator; grpc accepts
each. The wrapped behaviour of a response stream is always an async generator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]
# What runs around one call: given the call's context and its request stream (None for a
# unary request, which grpc has read already), a context manager entered before the
# behaviour runs and left when the call ends, with the exception that ended it, if any
# (GeneratorExit: the response stream was closed early).
Around = Callable[[grpc.aio.ServicerContext, AsyncIterator[Any] | None],
                  AbstractAsyncContextManager[None]]

_MAKE = {(False, False): grpc.unary_unary_rpc_method_handler,
         (False, True): grpc.unary_stream_rpc_method_handler,
         (True, False): grpc.stream_unary_rpc_method_handler,
         (True, True): grpc.stream_stream_rpc_method_handler}


def method_handler(behavior: Behavior, *, request_streaming: bool, response_streaming: bool,
                   request_deserializer: Callable[[bytes], Any] | None,
                   response_serializer: Callable[[Any], bytes] | None,
                   ) -> grpc.RpcMethodHandler:
    """The method handler of ``behavior``, of the shape the two flags name."""
    make = _MAKE[request_streaming, response_streaming]
    return make(behavior, request_deserializer=request_deserializer,
                response_serializer=response_serializer)


def behavior_of(rpc_handler: grpc.RpcMethodHandler) -> Behavior:
    """The one behaviour a method handler carries, whatever its shape."""
    found: Behavior = (rpc_handler.unary_unary or rpc_handler.unary_stream
                       or rpc_handler.stream_unary or rpc_handler.stream_stream)
    return found


def wrap(rpc_handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    """The same method handler (shape, deserializer, serializer), its behaviour run inside
    ``around(context, requests)`` on every call."""
    behavior = behavior_of(rpc_handler)
    streamed = bool(rpc_handler.request_streaming)

    if rpc_handler.response_streaming:
        async def stream_responses(request: Any, context: grpc.aio.ServicerContext,
                                   ) -> AsyncIterator[Any]:
            async with around(context, request if streamed else None):
                result = behavior(request, context)
                if isinstance(result, AsyncIterator):
                    async for response in result:
                        yield response
                elif isinstance(result, Awaitable):
                    await result
                else:  # a synchronous iterator
                    for response in result:
                        yield response

        wrapped: Behavior = stream_responses
    else:
        async def respond(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with around(context, request if streamed else None):
                result = behavior(request, context)
                if isinstance(result, Awaitable):
                    result = await result
                return result

        wrapped = respond
    return method_handler(wrapped, request_streaming=streamed,
                          response_streaming=bool(rpc_handler.response_streaming),
                          request_deserializer=rpc_handler.request_deserializer,
                          response_serializer=rpc_handler.response_serializer)
