"""batchd's HTTP edge as its users reach it: a server of the test's own with its HTTP port on
a free port of 127.0.0.1 (``http_app``), and the wire forms they send and read — Connect's JSON
and binary bodies, gRPC-Web's frames, Connect's error JSON and its details."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from google.protobuf import any_pb2, message
from google.rpc import error_details_pb2, status_pb2

from batchd.app import App
from tests.support.ports import free_port
from tests.support.servers import make_settings

SERVICE = "/batchd.v1.BatchService"
JSON = {"Content-Type": "application/json"}
PROTO = {"Content-Type": "application/proto"}


@asynccontextmanager
async def http_app(schema: str, **settings: Any) -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    """A server in this process with its HTTP port on, and an HTTP/1.1 client of it."""
    app = await App.start(make_settings(schema, http_port=free_port(), **settings))
    assert app.http is not None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http.port}",
                                     timeout=60) as client:
            yield app, client
    finally:
        await app.stop(grace=0)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def details(error: dict[str, Any]) -> list[message.Message]:
    """The details of a Connect error JSON, unpacked (ErrorInfo, BadRequest, RetryInfo...)."""
    known = {"google.rpc.ErrorInfo": error_details_pb2.ErrorInfo,
             "google.rpc.BadRequest": error_details_pb2.BadRequest,
             "google.rpc.RetryInfo": error_details_pb2.RetryInfo}
    out: list[message.Message] = []
    for detail in error.get("details", []):
        kind = known.get(detail["type"])
        if kind is None:
            continue
        value = detail["value"]
        out.append(kind.FromString(base64.b64decode(value + "=" * (-len(value) % 4))))
    return out


def error_info(error: dict[str, Any]) -> error_details_pb2.ErrorInfo:
    return next(d for d in details(error) if isinstance(d, error_details_pb2.ErrorInfo))


def violations(error: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v.field, v.description) for d in details(error)
            if isinstance(d, error_details_pb2.BadRequest) for v in d.field_violations]


def grpc_web_frame(request: message.Message) -> bytes:
    data = request.SerializeToString()
    return struct.pack(">BI", 0, len(data)) + data


def grpc_web_parse(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """The messages and the trailers of a gRPC-Web response body."""
    messages, trailers = [], {}
    while body:
        flags, length = struct.unpack(">BI", body[:5])
        payload, body = body[5:5 + length], body[5 + length:]
        if flags & 0x80:
            for line in payload.decode().split("\r\n"):
                if line:
                    key, _, value = line.partition(":")
                    trailers[key.strip().lower()] = value.strip()
        else:
            messages.append(payload)
    return messages, trailers


def grpc_status_of(trailers: dict[str, str]) -> status_pb2.Status:
    value = trailers.get("grpc-status-details-bin", "")
    status = status_pb2.Status.FromString(base64.b64decode(value + "=" * (-len(value) % 4)))
    return status


def unpack(detail: any_pb2.Any, kind: type[message.Message]) -> message.Message:
    out = kind()
    detail.Unpack(out)
    return out


async def until(predicate: Any, seconds: float = 30.0) -> None:
    """Wait until ``predicate()`` (awaited if it is a coroutine) holds: a condition the test
    observes, polled, never a guessed sleep."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + seconds
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert loop.time() < ends, "the condition never held"
        await asyncio.sleep(0.01)
