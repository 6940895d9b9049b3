"""BatchService over the Connect protocol (the ``connectrpc`` package): Connect with JSON or
binary bodies over HTTP/1.1 and HTTP/2, gRPC-Web (browsers), and gRPC itself on the same
paths (``/batchd.v1.BatchService/BatchExecute``...).

Each method authenticates its caller (batchd.http.edge, the same tokens as gRPC), then runs the
shared behaviour (batchd.rpc.calls): the same planner, executor, stream session, admission,
limits and observer (log line, operation counts). Failures are the same ``google.rpc.Status``
as gRPC's, as a Connect error (same code, message and details). ``batchd_rpcs_total`` and
``batchd_rpc_duration_seconds`` count these calls under the same method names.

Request bodies are parsed by batchd's codecs (``_BinaryCodec``, ``_JsonCodec``), not by
connectrpc's: a body that does not parse, and in JSON an unknown field, is INVALID_ARGUMENT with
a field violation naming the problem, exactly as a malformed gRPC message is; binary unary
bodies are parsed by the shared behaviour, off the event loop when large (batchd.rpc.decode).

BatchStream is bidirectional: over HTTP/2 it streams both ways (Connect, gRPC-Web and gRPC).
HTTP/1.1 cannot carry a full-duplex call; the curl ingest (batchd.http.ingest) is HTTP/1.1's
way to stream rows.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

from connectrpc.code import Code
from connectrpc.codec import Codec
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import json_format
from google.protobuf.message import Message

from batchd.errors import BatchdError, InvalidArgument
from batchd.http.edge import REQUEST_ID_HEADER, Gatekeeper, HttpCall, call_of, connect_error
from batchd.metrics import Metrics
from batchd.rpc import decode
from batchd.rpc.calls import Calls
from batchd.v1 import batch_pb2

SERVICE = decode.SERVICE.full_name
_M = TypeVar("_M", bound=Message)


class _BinaryCodec:
    """Protobuf binary. Unary requests stay bytes (``decode.Raw``) for the shared behaviour to
    parse; a stream's messages are parsed here, as gRPC's are."""

    def name(self) -> str:
        return "proto"

    def encode(self, message: Message) -> bytes:
        return message.SerializeToString()

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        if message_class is batch_pb2.BatchStreamRequest:
            parsed = decode.parse_now(bytes(data), message_class)
            _raise_if_malformed(parsed)
            return parsed
        return decode.Raw(data)


class _JsonCodec:
    """Protobuf JSON (proto3 JSON mapping); an unknown field is refused, not ignored."""

    def name(self) -> str:
        return "json"

    def encode(self, message: Message) -> bytes:
        answer = json_format.MessageToDict(message)
        for result in answer.get("results", ()) if isinstance(message, _WITH_ROWS) else ():
            if "rows" in result:  # the only numbers a double carries: rows (Struct values)
                result["rows"] = _integral(result["rows"])
        return json.dumps(answer, separators=(", ", ": "), ensure_ascii=False).encode()

    def decode(self, data: bytes | bytearray, message_class: type[_M]) -> _M:
        message = message_class()
        try:
            json_format.Parse(bytes(data), message, ignore_unknown_fields=False)
        except (json_format.ParseError, RecursionError, ValueError) as exc:
            _raise_if_malformed(decode.Malformed(message_class.DESCRIPTOR.full_name,
                                                 f"JSON: {exc}"))
        return message


# The answers whose results carry rows.
_WITH_ROWS = (batch_pb2.BatchExecuteResponse,)
# Integers a double holds exactly: beyond, a float prints as it is.
_EXACT = 2 ** 53


def _integral(value: Any) -> Any:
    """``value`` with every float that holds an integer as that integer. A row's numbers travel
    in ``google.protobuf.Value`` (a double), and Python's protobuf prints 1 as ``1.0`` where
    Go's (grpcurl, the gRPC port's JSON) prints ``1``: over HTTP a column of integers reads as
    integers too. The value is the same number either way in JSON."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and -_EXACT <= value <= _EXACT else value
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


class _Refused(ConnectError):
    """A message batchd's codec refused: the Connect error, and batchd's own (its field
    violations), for a request stream to carry on (``_client_stream``)."""

    def __init__(self, error: BatchdError) -> None:
        refused = connect_error(error)
        super().__init__(refused.code, refused.message, refused.details)
        self.error = error


def _raise_if_malformed(parsed: Any) -> None:
    error = decode.problem(parsed)
    if error is not None:
        raise _Refused(error)


async def _client_stream(requests: AsyncIterator[_M]) -> AsyncIterator[_M]:
    """A request stream whose protocol errors are the client's: a message the codec refused
    keeps its own error; a truncated or malformed envelope, or a frame over the size limit
    (connectrpc's ConnectError, raised while the session reads) is INVALID_ARGUMENT naming it
    — never the unexpected error (INTERNAL) it would be to the session."""
    try:
        async for request in requests:
            yield request
    except _Refused as refused:
        raise refused.error from None
    except ConnectError as exc:
        raise InvalidArgument.field("request", f"the request stream: {exc.message}") from None


class BatchServiceApp(ConnectASGIApplication[Calls]):
    """The ASGI application of BatchService over Connect, gRPC-Web and gRPC."""

    @property
    def path(self) -> str:
        return "/" + SERVICE

    def __init__(self, calls: Calls, gatekeeper: Gatekeeper, metrics: Metrics,
                 max_message_bytes: int) -> None:
        self.calls = calls
        self.gatekeeper = gatekeeper
        self.metrics = metrics
        codecs: list[Codec] = [_BinaryCodec(), _JsonCodec()]
        super().__init__(service=calls, endpoints=self._endpoints_of,
                         read_max_bytes=max_message_bytes, codecs=codecs)

    def _endpoints_of(self, calls: Calls) -> dict[str, Any]:
        def info(name: str, stream: StreamType,
                 level: IdempotencyLevel = IdempotencyLevel.UNKNOWN) -> MethodInfo[Any, Any]:
            method = decode.SERVICE.methods_by_name[name]
            return MethodInfo(name=name, service_name=SERVICE,
                              input=getattr(batch_pb2, method.input_type.name),
                              output=getattr(batch_pb2, method.output_type.name),
                              idempotency_level=level, stream_type=stream)

        return {
            f"/{SERVICE}/BatchExecute": Endpoint.unary(
                info("BatchExecute", StreamType.UNARY),
                self._unary("BatchExecute", calls.batch_execute)),
            # No side effects: Connect lets browsers and curl GET it (cacheable).
            f"/{SERVICE}/GetSchema": Endpoint.unary(
                info("GetSchema", StreamType.UNARY, IdempotencyLevel.NO_SIDE_EFFECTS),
                self._unary("GetSchema", calls.get_schema)),
            f"/{SERVICE}/BatchStream": Endpoint.bidi_stream(
                info("BatchStream", StreamType.BIDI_STREAM), self._batch_stream),
        }

    def _call(self, ctx: RequestContext[Any, Any]) -> HttpCall:
        headers = list(ctx.request_headers.allitems())
        try:
            principal = self.gatekeeper.principal(headers, {})
        except BatchdError as error:
            raise connect_error(error) from None
        call = call_of(headers, principal, ctx.timeout_ms)
        ctx.response_headers[REQUEST_ID_HEADER] = call.request_id
        return call

    def _unary(self, name: str, behaviour: Callable[[Any, HttpCall], Awaitable[Message]],
               ) -> Callable[[Any, RequestContext[Any, Any]], Awaitable[Message]]:
        method = f"/{SERVICE}/{name}"

        async def run(request: Any, ctx: RequestContext[Any, Any]) -> Message:
            with self._answered(method):
                return await behaviour(request, self._call(ctx))
        return run

    async def _batch_stream(self, requests: AsyncIterator[batch_pb2.BatchStreamRequest],
                            ctx: RequestContext[Any, Any],
                            ) -> AsyncIterator[batch_pb2.BatchStreamResponse]:
        # The shared behaviour translates whatever fails inside it (a BatchdError leaves it);
        # the request stream's own protocol errors are the client's (``_client_stream``).
        with self._answered(f"/{SERVICE}/BatchStream"):
            call = self._call(ctx)
            async for response in self.calls.batch_stream(_client_stream(requests), call):
                yield response

    @contextlib.contextmanager
    def _answered(self, method: str) -> Iterator[None]:
        """A call's block: its failure as the Connect error of the same Status gRPC sends,
        and the call counted under its method and final code (CANCELLED when the client left
        first), as the gRPC interceptor counts."""
        started, code = time.perf_counter(), "CANCELLED"
        try:
            yield
            code = "OK"
        except BatchdError as error:
            code = error.code.name
            raise connect_error(error) from None
        except ConnectError as error:  # authentication, before the behaviour ran
            code = _grpc_name(error.code)
            raise
        finally:
            self._count(method, code, started)

    def _count(self, method: str, code: str, started: float) -> None:
        metrics = self.metrics
        metrics.child(metrics.rpcs, method, code).inc()
        metrics.child(metrics.rpc_duration, method).observe(time.perf_counter() - started)


def _grpc_name(code: Code) -> str:
    return "CANCELLED" if code is Code.CANCELED else code.name
