"""BatchStream from a test's side: requests built from the JSON a user would type, a stream
opened and answered, and Arrow chunks."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pyarrow as pa
import pytest
from google.protobuf import json_format
from grpc_status import rpc_status

from batchd.errors import from_rpc_status
from batchd.v1 import batch_pb2

Req = batch_pb2.BatchStreamRequest
COMMIT = Req(commit=batch_pb2.StreamCommit())
INDEPENDENT = {"mode": "MODE_INDEPENDENT"}


def header(**fields: Any) -> Req:
    return Req(header=json_format.ParseDict(fields, batch_pb2.StreamHeader()))


def rows_chunk(sequence: int, rows: list[dict[str, Any]]) -> Req:
    chunk = json_format.ParseDict({"sequence": sequence, "rows": rows}, batch_pb2.StreamChunk())
    return Req(chunk=chunk)


def columnar(sequence: int, **arrays: dict[str, Any]) -> Req:
    return Req(chunk=json_format.ParseDict(
        {"sequence": sequence, "columnar": {"columns": list(arrays.values())}},
        batch_pb2.StreamChunk()))


def ops_chunk(sequence: int, operations: list[dict[str, Any]]) -> Req:
    return Req(chunk=json_format.ParseDict({"sequence": sequence, "operations": operations},
                                           batch_pb2.StreamChunk()))


def events(start: int, count: int, kind: str = "click") -> list[dict[str, Any]]:
    """Rows of the test table ``events``."""
    return [{"id": str(i), "kind": kind, "score": i % 10} for i in range(start, start + count)]


async def open_stream(stub: Any, first: Req, **kwargs: Any) -> tuple[Any, Any]:
    """A BatchStream call (``kwargs``: metadata, timeout, ...) after its header: the call and
    its StreamOpened."""
    call = stub.BatchStream(**kwargs)
    await call.write(first)
    opened = await call.read()
    assert opened.WhichOneof("kind") == "opened", opened
    return call, opened.opened


async def send(call: Any, request: Req) -> batch_pb2.BatchStreamResponse:
    await call.write(request)
    return await call.read()


async def ended_with(call: Any) -> tuple[grpc.StatusCode, str]:
    """Read a stream until it fails: its code and its ErrorInfo reason."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while True:
            await call.read()
    status = rpc_status.from_call(caught.value)
    return caught.value.code(), from_rpc_status(status).reason if status else ""


def joining(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """ATOMIC streams' writer starts late (their chunks wait, decoded, in the queue, and join
    one COPY: batchd.stream.joined); the number of chunks of each joined COPY is recorded."""
    from batchd.stream import session

    sizes: list[int] = []
    begin, write_joined = session.begin, session.write_joined

    class Late:
        def __init__(self, tx: Any) -> None:
            self.tx = tx

        async def start(self) -> None:
            await asyncio.sleep(0.3)
            await self.tx.start()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.tx, name)

    def late(*args: Any, **kwargs: Any) -> Any:
        return Late(begin(*args, **kwargs))

    async def spy(conn: Any, chunks: list[Any], ingest: Any) -> Any:
        sizes.append(len(chunks))
        return await write_joined(conn, chunks, ingest)
    monkeypatch.setattr(session, "begin", late)
    monkeypatch.setattr(session, "write_joined", spy)
    return sizes


# --- ENCODING_ARROW --------------------------------------------------------------------------

def ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def arrow_header(table: str, schema: pa.Schema | None = None, **fields: Any) -> Req:
    head = batch_pb2.StreamHeader(table=table, encoding=batch_pb2.ENCODING_ARROW, **fields)
    if schema is not None:
        head.arrow_schema = schema.serialize().to_pybytes()
    return Req(header=head)


def arrow_chunk(sequence: int, table: pa.Table) -> Req:
    return Req(chunk=batch_pb2.StreamChunk(sequence=sequence, arrow=ipc(table)))
