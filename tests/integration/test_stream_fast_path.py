"""ROWS and COLUMNAR chunks take the Arrow fast path (batchd.stream.arrow_rows) only where it
stores exactly what the per-value path stores: every value below goes in once as it comes and
once with the fast path turned off, and the acks (rows written, rows rejected, their reasons)
and the stored values must be the same. Each value sits in a chunk of its own, beside a good
one, so that a value the fast path wrongly took would show."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from google.protobuf import json_format

from batchd.stream.encodings.records import FastDecoded, RecordsEncoding
from batchd.v1 import batch_pb2
from tests.support.streams import Req, header, open_stream, send

# column -> (a good value, values to try), each value as ROWS sends it (JSON-like)
ROWS_VALUES: dict[str, tuple[Any, list[Any]]] = {
    "money": ("1.50", ["1.5", "1.005", "1e2", ".5", "-0", " 1.5", "NaN", "9999999999.99",
                       "10000000000", "+1.5", "0001.50", "1_000", "", 1.5, None]),
    "num": ("1.5", ["12345678901234567890.123456789", "1.50", "1e-3"]),
    "i4": (7, [2**31 - 1, -(2**31), 2**31, "5", "0x10", "+5", "-5", 1.5, "", None, True]),
    "i8": ("9007199254740993", ["-9223372036854775808", "9223372036854775808",
                                "00000000000000000000001", "0000000000000000001",
                                9007199254740993, 2**53 - 1, 12.0]),
    "i2": (1, [2**15, -(2**15), "32767"]),
    "day": ("2026-12-01", ["0000-01-01", "0001-01-01", "infinity", "20261201", "2024-02-29",
                           "2023-02-29", " 2026-12-01", ""]),
    "at": ("2024-01-01T00:00:00Z", ["2024-01-01 00:00:00+02:00", "0001-01-01T00:00:00+01:00",
                                    "0001-01-01T00:00:00-01:00", "2024-01-01T00:00:00",
                                    "2024-01-01T00:00:00.1234567Z", "2024-01-01T00:00:00.5Z",
                                    "infinity", "0000-01-01T00:00:00Z", "2024-01-01T23:59:60Z",
                                    "2024-01-01T00:00:00+0100", "2024-01-01T00:00Z"]),
    "local_at": ("2024-01-01T00:00:00", ["2024-01-01 10:00:00.25", "2024-01-01T00:00:00Z",
                                         "0000-01-01T00:00:00"]),
    "uid": ("8c7e1d1e-1a6b-4f0e-9a57-3d3a0f8b9c11",
            ["8C7E1D1E-1A6B-4F0E-9A57-3D3A0F8B9C11", "{8c7e1d1e-1a6b-4f0e-9a57-3d3a0f8b9c11}",
             "8c7e1d1e1a6b4f0e9a573d3a0f8b9c11", "8c7e1d1e-1a6b-4f0e-9a57-3d3a0f8b9c1g", None]),
    "tags": (["a"], [[], None, ["a", None], [1], [["a"]], "ab", [True], ['q"uote', "é"]]),
    "docb": ({"a": 1}, ["str", 1.5, 2.0, None, [1, {"b": None}], {"$ref": "x.y"},
                        {"$literal": {"$ref": 1}}, {"$ref": "bad ref"}]),
    "doc": ({"a": [1, 2]}, [{"k": "v"}, 9007199254740993]),
    "f8": (0.1, [0.0, -0.0, 1e308, "NaN", "0.1", None]),
    "label": ("x", ["", None, 5, "a\x00b", "é"]),
    "code": ("abc", ["0123456789", "01234567890"]),
    "flag": (True, [False, None, "true", 1]),
    "blob": (base64.b64encode(b"\x00\x01").decode(), ["", "not base64!"]),
}

# column -> (a good value, values to try), each as (ColumnValues array, value); None: NULL
COLUMNAR_VALUES: dict[str, tuple[tuple[str, Any], list[tuple[str, Any]]]] = {
    "money": (("strings", "1.50"), [("strings", v) for v in
                                    ["1.5", "1.005", "1e2", "-0", " 1.5", "NaN", "10000000000",
                                     "", None]] + [("doubles", 1.5), ("int64s", 5)]),
    "num": (("strings", "1.5"), [("strings", "12345678901234567890.123456789")]),
    "i4": (("int64s", 7), [("int64s", 2**31), ("int64s", -(2**31)), ("strings", "5"),
                           ("strings", "0x10"), ("doubles", 5.0), ("int64s", None)]),
    "i8": (("int64s", 1), [("strings", "9223372036854775807"), ("strings", "1e3"),
                           ("int64s", -(2**63))]),
    "f8": (("doubles", 0.5), [("int64s", 2**53), ("int64s", 2**53 + 1), ("strings", "NaN"),
                              ("doubles", None)]),
    "day": (("strings", "2026-12-01"), [("strings", v) for v in
                                        ["0000-01-01", "infinity", "20261201", None]]),
    "at": (("timestamp_micros", 1796120130123456),
           [("timestamp_micros", -(2**62)), ("timestamp_micros", 0),
            ("strings", "2024-01-01T00:00:00+02:00"), ("strings", "2024-01-01T00:00:00"),
            ("int64s", 5)]),
    "local_at": (("timestamp_micros", 0), [("strings", "2024-01-01 10:00:00.25")]),
    "uid": (("strings", "8c7e1d1e-1a6b-4f0e-9a57-3d3a0f8b9c11"),
            [("strings", "{8c7e1d1e-1a6b-4f0e-9a57-3d3a0f8b9c11}"), ("strings", "bad"),
             ("strings", None), ("bytes", b"\x00" * 16)]),
    "tags": (("strings", '["a"]'), [("strings", v) for v in
                                    ["[]", "null", '["a", null]', "[1]", "[1.50]", '[["a"]]',
                                     '"ab"', "{}", "not json", None, '[ "x" ,\n"y" ]',
                                     '["a,b", ""]', '["]"]', '["a\\"b"]', '["\\u00e9"]',
                                     ' ["a"]', '["a"] ', '["a"]]', '["a" "b"]', '["a",]',
                                     '["\t"]', "[ ]",
                                     # PostgreSQL's array literal (batchd.stream.array_literal)
                                     "{a,b}", '{"a b",NULL}', '{"NULL",null,NuLl}', "{}",
                                     "{{}}", " {x} ", '{"\\\\",\\"}', "{a\\ }",
                                     "{{a,b},{c,d}}", "{{a},{b,c}}", "{a,,b}", "{a}x",
                                     "[1:2]={a,b}", "[0:1]={a,b}", '{"é,ß", "{}"}',
                                     '{a"b"}', "{1,2.50}", "[2]", "[1:2]"]]),
    "docb": (("strings", '{"a": 1}'), [("strings", v) for v in
                                       ['{"x": 1.00000000000000000001}', "NaN", "", "[1",
                                        '"\\u0000"', None]]),
    "doc": (("strings", '{"a": 1}'), [("strings", '{"a":  1}'), ("strings", "nope")]),
    "ids": (("strings", "[1, 2]"), [("strings", v) for v in
                                    ['["9007199254740993"]', "{9007199254740993,NULL}", "{}",
                                     "{1.5}", "{x}", '{" 7 "}']]),
    "grid": (("strings", "[[1, 2], [3, 4]]"), [("strings", v) for v in
                                               ["{{1,2},{3,4}}", "{{1},{2,3}}", "{1,2}",
                                                "[1:1][1:2]={{1,2}}"]]),
    "label": (("strings", "x"), [("strings", "a\x00b"), ("int64s", 5), ("strings", None)]),
    "flag": (("bools", True), [("bools", None), ("strings", "true")]),
    "blob": (("bytes", b"\x00"), [("strings", "AAE="), ("bytes", None)]),
}


def rows_chunk(sequence: int, first_id: int, name: str, values: list[Any]) -> Req:
    return Req(chunk=json_format.ParseDict(
        {"sequence": sequence, "rows": [{"id": first_id + i, name: v}
                                        for i, v in enumerate(values)]},
        batch_pb2.StreamChunk()))


def columnar_chunk(sequence: int, first_id: int, values: list[tuple[str, Any]]) -> Req:
    kinds = {kind for kind, _ in values}
    assert len(kinds) == 1, values
    (kind,) = kinds
    ids = batch_pb2.ColumnValues(int64s=batch_pb2.Int64Array(
        values=[first_id + i for i in range(len(values))]))
    column = batch_pb2.ColumnValues()
    placeholder = {"strings": "", "bytes": b"", "bools": False, "doubles": 0.0}.get(kind, 0)
    for i, (_, value) in enumerate(values):
        getattr(column, kind).values.append(placeholder if value is None else value)
        if value is None:
            column.null_indexes.append(i)
    return Req(chunk=batch_pb2.StreamChunk(sequence=sequence, columnar=batch_pb2.ColumnarRows(
        columns=[ids, column])))


async def outcome(stub: Any, db: Any, encoding: str, name: str, chunks: list[Req],
                  ) -> tuple[list[Any], list[Any]]:
    call, _ = await open_stream(stub, header(table="all_types", columns=["id", name],
                                             encoding=encoding, mode="MODE_INDEPENDENT"))
    acks = []
    for request in chunks:
        ack = (await send(call, request)).ack
        acks.append((ack.rows_written, [(r.index, r.chunk_index, r.status.code,
                                         r.status.message) for r in ack.rejected]))
    await call.done_writing()
    assert (await call.read()).summary.committed
    stored = [tuple(r) for r in await db.fetch(f"SELECT id, {name}::text FROM all_types "
                                               "ORDER BY id")]
    await db.execute("DELETE FROM all_types")
    return acks, stored


def spy_on_fast_path(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    taken: list[bool] = []
    fast = RecordsEncoding.fast

    def spy(self: RecordsEncoding, chunk: batch_pb2.StreamChunk) -> FastDecoded | None:
        decoded = fast(self, chunk)
        taken.append(decoded is not None)
        return decoded
    monkeypatch.setattr(RecordsEncoding, "fast", spy)
    return taken


@pytest.mark.parametrize("name", list(ROWS_VALUES))
async def test_rows_fast_path_stores_what_the_per_value_path_stores(stub, db, monkeypatch,
                                                                    name):
    good, tries = ROWS_VALUES[name]
    chunks = [rows_chunk(1, 0, name, [good, good])] + [
        rows_chunk(i + 2, 10 * (i + 1), name, [good, value]) for i, value in enumerate(tries)]
    taken = spy_on_fast_path(monkeypatch)
    fast = await outcome(stub, db, "ENCODING_ROWS", name, chunks)
    if name not in ("num", "blob"):  # unconstrained numeric, base64: per value only
        assert taken[0], "a chunk of good values takes the fast path"
    monkeypatch.setattr(RecordsEncoding, "fast", lambda self, chunk: None)
    assert fast == await outcome(stub, db, "ENCODING_ROWS", name, chunks)


@pytest.mark.parametrize("name", list(COLUMNAR_VALUES))
async def test_columnar_fast_path_stores_what_the_per_value_path_stores(stub, db, monkeypatch,
                                                                        name):
    good, tries = COLUMNAR_VALUES[name]
    chunks = [columnar_chunk(1, 0, [good, good])] + [
        columnar_chunk(i + 2, 10 * (i + 1), [good, value]) if value[0] == good[0]
        else columnar_chunk(i + 2, 10 * (i + 1), [value, value])
        for i, value in enumerate(tries)]
    taken = spy_on_fast_path(monkeypatch)
    fast = await outcome(stub, db, "ENCODING_COLUMNAR", name, chunks)
    if name not in ("num", "ids", "grid"):  # unconstrained numeric, int arrays: per value
        assert taken[0], "a chunk of good values takes the fast path"
    monkeypatch.setattr(RecordsEncoding, "fast", lambda self, chunk: None)
    assert fast == await outcome(stub, db, "ENCODING_COLUMNAR", name, chunks)
