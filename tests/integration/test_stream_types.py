"""Every encoding carries every column type of a realistic table exactly — or refuses it with
INVALID_ARGUMENT naming the column, never UNAVAILABLE or INTERNAL for a permanent problem.

One row of each type goes in through ROWS, COLUMNAR and CSV, and is read back and compared
with what the same value gives through BatchExecute (the exact mapping of batch.proto)."""

from __future__ import annotations

import base64
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from batchd.v1 import batch_pb2
from tests.support.batches import batch, rows
from tests.support.streams import COMMIT, Req, header, open_stream, send

# column -> (value as a client sends it in ROWS / BatchExecute, CSV text for COPY, and the
# COLUMNAR array kind and value)
VALUES: dict[str, tuple[Any, str, str, Any]] = {
    "i8": ("9007199254740993", "9007199254740993", "int64s", 9007199254740993),
    "num": ("12345678901234567890.123456789", "12345678901234567890.123456789", "strings",
            "12345678901234567890.123456789"),
    "money": ("19.99", "19.99", "strings", "19.99"),
    "f8": (0.1, "0.1", "doubles", 0.1),
    "flag": (True, "t", "bools", True),
    "label": ('a "quoted", text\nwith a newline', '"a ""quoted"", text\nwith a newline"',
              "strings", 'a "quoted", text\nwith a newline'),
    "uid": ("8c7e1d1e-1a6b-4f0e-9a57-3d3a0f8b9c11", "8c7e1d1e-1a6b-4f0e-9a57-3d3a0f8b9c11",
            "strings", "8c7e1d1e-1a6b-4f0e-9a57-3d3a0f8b9c11"),
    "day": ("2026-12-01", "2026-12-01", "strings", "2026-12-01"),
    "at": ("2026-12-01T10:15:30.123456Z", "2026-12-01 10:15:30.123456+00", "timestamp_micros",
           1796120130123456),
    "doc": ({"a": [1, 2], "b": "x"}, '"{""a"": [1, 2], ""b"": ""x""}"', "strings",
            '{"a": [1, 2], "b": "x"}'),
    "docb": ({"k": {"n": 1.5}}, '"{""k"": {""n"": 1.5}}"', "strings", '{"k": {"n": 1.5}}'),
    "blob": (base64.b64encode(b"\x00\x01\xff").decode(), "\\x0001ff", "bytes", b"\x00\x01\xff"),
    "ids": (["1", "9007199254740993"], '"{1,9007199254740993}"', "strings",
            '["1", "9007199254740993"]'),
    "tags": (["a b", 'q"uote'], '"{""a b"",""q\\""uote""}"', "strings", '["a b", "q\\"uote"]'),
}


def columnar_chunk(name: str, kind: str, value: Any) -> Req:
    ids = batch_pb2.ColumnValues(int64s=batch_pb2.Int64Array(values=[1]))
    column = batch_pb2.ColumnValues()
    getattr(column, kind).values.append(value)
    return Req(chunk=batch_pb2.StreamChunk(sequence=1, columnar=batch_pb2.ColumnarRows(
        columns=[ids, column])))


def chunk_for(encoding: str, name: str) -> Req:
    value, csv_text, kind, native = VALUES[name]
    if encoding == "ENCODING_ROWS":
        return Req(chunk=json_format.ParseDict({"sequence": 1, "rows": [{"id": 1, name: value}]},
                                               batch_pb2.StreamChunk()))
    if encoding == "ENCODING_CSV":
        return Req(chunk=batch_pb2.StreamChunk(sequence=1, csv=f"1,{csv_text}\n".encode()))
    return columnar_chunk(name, kind, native)


@pytest.mark.parametrize("name", list(VALUES))
@pytest.mark.parametrize("encoding", ["ENCODING_ROWS", "ENCODING_COLUMNAR", "ENCODING_CSV"])
async def test_each_encoding_carries_each_type_exactly(stub, db, encoding, name):
    call, _ = await open_stream(stub, header(table="all_types", columns=["id", name],
                                             encoding=encoding))
    ack = (await send(call, chunk_for(encoding, name))).ack
    assert not ack.rejected, ack.rejected[0].status.message
    assert ack.rows_written == 1
    assert (await send(call, COMMIT)).summary.committed
    got = await stub.BatchExecute(batch([{"id": "g", "get": {"table": "all_types",
                                                             "key": {"id": 1},
                                                             "columns": [name]}}]))
    await db.execute("DELETE FROM all_types")
    await stub.BatchExecute(batch([{"id": "i", "insert": {"table": "all_types",
                                                          "rows": [{"id": 2,
                                                                    name: VALUES[name][0]}]}}]))
    want = await stub.BatchExecute(batch([{"id": "g", "get": {"table": "all_types",
                                                              "key": {"id": 2},
                                                              "columns": [name]}}]))
    assert rows(got.results[0]) == rows(want.results[0])


async def test_a_columnar_array_that_cannot_carry_a_column_is_refused_naming_it(stub):
    call, _ = await open_stream(stub, header(table="all_types", columns=["id", "ids"],
                                             encoding="ENCODING_COLUMNAR"))
    await call.write(columnar_chunk("ids", "bools", True))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ids" in caught.value.details()


async def test_columnar_json_text_keeps_every_digit_of_its_numbers(stub, db):
    text = '{"x": 1.00000000000000000001, "big": 12345678901234567890.5}'
    call, _ = await open_stream(stub, header(table="all_types", columns=["id", "docb", "ids"],
                                             encoding="ENCODING_COLUMNAR"))
    chunk = columnar_chunk("docb", "strings", text)
    ids = batch_pb2.ColumnValues(strings=batch_pb2.StringArray(values=["[9007199254740993]"]))
    chunk.chunk.columnar.columns.append(ids)
    assert (await send(call, chunk)).ack.rows_written == 1
    assert (await send(call, COMMIT)).summary.committed
    row = await db.fetchrow("SELECT docb::text AS docb, ids FROM all_types WHERE id = 1")
    assert row["docb"] == '{"x": 1.00000000000000000001, "big": 12345678901234567890.5}'
    assert row["ids"] == [9007199254740993]
