"""Requests are decoded by batchd, not in gRPC's generated code, so that a malformed message is
INVALID_ARGUMENT naming the problem instead of UNKNOWN ("Unexpected DecodeError") with a
traceback in the log.

``register`` adds BatchService to a server like the generated
``add_BatchServiceServicer_to_server``, with deserializers that never raise: bytes protobuf
cannot parse (not the message, or values nested deeper than protobuf's recursion limit of 100
message levels, ~30 levels of JSON-like values) become a ``Malformed`` request, which the
servicer refuses (``check``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from batchd import offload
from batchd.errors import InvalidArgument
from batchd.rpc import shapes
from batchd.v1 import batch_pb2

SERVICE = batch_pb2.DESCRIPTOR.services_by_name["BatchService"]
_M = TypeVar("_M", bound=Message)


class Malformed:
    """A request message that could not be parsed."""

    __slots__ = ("message_type", "reason")

    def __init__(self, message_type: str, reason: str) -> None:
        self.message_type = message_type
        self.reason = reason


# Requests larger than this are parsed on a worker thread: parsing a 20 MB message takes long
# enough to stall every other call on the event loop.
OFF_LOOP_BYTES = 1 << 20


class Raw(bytes):
    """A unary request's bytes, parsed by the method handler (``parse``), off the loop if large."""


def _decoder(message_class: type[Message]) -> Callable[[bytes], Message | Malformed]:
    name = message_class.DESCRIPTOR.full_name

    def decode(data: bytes) -> Message | Malformed:
        try:
            return message_class.FromString(data)
        except (DecodeError, RecursionError, ValueError) as exc:
            return Malformed(name, str(exc) or type(exc).__name__)
    return decode


def parse_now(data: bytes, message_class: type[Message]) -> Message | Malformed:
    """The message ``data`` holds (or ``Malformed``), parsed here and now (a stream's
    chunk-sized messages)."""
    return _decoder(message_class)(data)


async def parse(request: Raw | Message, message_class: type[_M]) -> _M | Malformed:
    """The message a unary request's bytes hold (or ``Malformed``)."""
    if not isinstance(request, bytes):
        return request  # type: ignore[return-value]
    decode = _decoder(message_class)
    if len(request) < OFF_LOOP_BYTES:
        return decode(request)  # type: ignore[return-value]
    return await offload.run(decode, request)  # type: ignore[arg-type]


def problem(request: Any) -> InvalidArgument | None:
    """The INVALID_ARGUMENT of a ``Malformed`` request; None for a parsed one."""
    if not isinstance(request, Malformed):
        return None
    return InvalidArgument.field(
        "request", f"not a valid {request.message_type}: {request.reason} (a malformed "
                   "message, or values nested deeper than about 30 levels)")


def check(request: Any) -> None:
    """Raise ``problem(request)``, if any."""
    error = problem(request)
    if error is not None:
        raise error


async def checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A stream's requests, each ``check``ed."""
    async for request in requests:
        check(request)
        yield request


def register(servicer: Any, server: grpc.aio.Server) -> None:
    rpc_handlers = {}
    for method in SERVICE.methods:
        request_class = getattr(batch_pb2, method.input_type.name)
        response_class = getattr(batch_pb2, method.output_type.name)
        # Unary requests stay bytes until the method handler parses them (``parse``); a stream's
        # messages are chunk-sized and parsed as they come.
        deserializer = _decoder(request_class) if method.client_streaming else Raw
        rpc_handlers[method.name] = shapes.method_handler(
            getattr(servicer, method.name), request_streaming=method.client_streaming,
            response_streaming=method.server_streaming, request_deserializer=deserializer,
            response_serializer=response_class.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name,
                                                                          rpc_handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, rpc_handlers)
