"""BatchStream with ENCODING_ARROW: every column type stored exactly, inexact types refused at
the header naming the column, bad rows isolated, INDEPENDENT resume with the ledger, ATOMIC
commit only on the commit message."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import grpc
import pyarrow as pa
import pytest

from batchd.v1 import batch_pb2
from tests.support.batches import no_open_transaction
from tests.support.streams import COMMIT, Req, arrow_chunk, arrow_header, open_stream, send

INDEPENDENT = batch_pb2.MODE_INDEPENDENT
ARROW = batch_pb2.ENCODING_ARROW


BIG = 2**53 + 1
PARIS = dt.timezone(dt.timedelta(hours=2))
UID = uuid.UUID("6f1e4b1c-9a3b-4c8e-8f2e-0d9b1a7c5e33")


def all_types_table() -> pa.Table:
    """A row of every supported type with edge values, and a row of NULLs."""
    return pa.table({
        "id": pa.array([BIG, 2], pa.int64()),
        "i2": pa.array([-128, None], pa.int8()),
        "i4": pa.array([65535, None], pa.uint16()),
        "i8": pa.array([-(2**63), None], pa.int64()),
        "num": pa.array([Decimal("12345678901234567890.1234567890"), None],
                        pa.decimal128(38, 10)),
        "money": pa.array([Decimal("-9999999999.99"), None], pa.decimal128(12, 2)),
        "f8": pa.array([0.1, None], pa.float64()),
        "flag": pa.array([True, None]),
        "label": pa.array(['quote " and \'single\', comma, \\ back\nnew line\ttab é 😀', None]),
        "code": pa.array(["ten chars!", None], pa.large_string()),
        "uid": pa.array([str(UID).upper(), None]),
        "day": pa.array([dt.date(1, 1, 1), None], pa.date32()),
        "at": pa.array([dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=PARIS), None],
                       pa.timestamp("ns", tz="Europe/Paris")),
        "local_at": pa.array([dt.datetime(1999, 12, 31, 23, 59, 59, 123000), None],
                             pa.timestamp("ms")),
        "doc": pa.array(['{"b": 1.50, "a": [1, 2]}', None]),
        "docb": pa.array(['{"exact": 12345678901234567890.123}', None]),
        "blob": pa.array([b"\x00\x01\xff\\x", None], pa.binary()),
        "ids": pa.array([[BIG, None, -1], None], pa.list_(pa.int64())),
        "tags": pa.array([['a,b', '"q"', "{}", None, "NULL"], []], pa.list_(pa.string())),
        "grid": pa.array([[1, 2, 3], None], pa.large_list(pa.int32())),
        "span": pa.array([dt.timedelta(days=40, microseconds=1), None], pa.duration("us")),
    })


async def test_arrow_every_type_round_trips_exactly(stub, db):
    table = all_types_table()
    call, _ = await open_stream(stub, arrow_header("all_types", table.schema))
    ack = (await send(call, arrow_chunk(1, table))).ack
    assert ack.rows_written == 2 and not ack.rejected, ack
    assert (await send(call, COMMIT)).summary.committed
    row = await db.fetchrow("SELECT * FROM all_types WHERE id = $1", BIG)
    assert row["i2"] == -128 and row["i4"] == 65535 and row["i8"] == -(2**63)
    assert await db.fetchval("SELECT num::text FROM all_types WHERE id = $1", BIG) == \
        "12345678901234567890.1234567890"
    assert row["money"] == Decimal("-9999999999.99")
    assert row["f8"] == 0.1 and row["flag"] is True
    assert row["label"] == table["label"][0].as_py()
    assert row["code"] == "ten chars!" and row["uid"] == UID
    assert await db.fetchval("SELECT day::text FROM all_types WHERE id = $1", BIG) == \
        "0001-01-01"
    assert row["at"] == dt.datetime(2024, 2, 29, 21, 59, 59, 999999, tzinfo=dt.UTC)
    assert row["local_at"] == dt.datetime(1999, 12, 31, 23, 59, 59, 123000)
    assert row["doc"] == '{"b": 1.50, "a": [1, 2]}'  # json keeps its text
    assert await db.fetchval("SELECT docb->>'exact' FROM all_types WHERE id = $1", BIG) == \
        "12345678901234567890.123"
    assert row["blob"] == b"\x00\x01\xff\\x"
    assert row["ids"] == [BIG, None, -1]
    assert row["tags"] == ['a,b', '"q"', "{}", None, "NULL"]
    assert row["grid"] == [1, 2, 3]
    assert await db.fetchval("SELECT span::text FROM all_types WHERE id = $1", BIG) == \
        "960:00:00.000001"
    nulls = await db.fetchrow("SELECT * FROM all_types WHERE id = 2")
    assert [k for k, v in nulls.items() if v is not None] == ["id", "tags"]
    assert nulls["tags"] == []


async def test_arrow_columns_are_matched_by_name_and_null_columns_fit(stub, db):
    table = pa.table({"score": pa.array([None, None], pa.null()), "kind": ["a", "b"],
                      "id": pa.array([1, 2], pa.int32())})
    call, opened = await open_stream(stub, arrow_header("events", **{"mode": INDEPENDENT}))
    assert opened.last_committed_sequence == 0
    ack = (await send(call, arrow_chunk(1, table))).ack
    assert ack.rows_written == 2
    assert (await finish(call)).rows_written == 2
    rows = await db.fetch("SELECT id, kind, score FROM events ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, "a", None), (2, "b", None)]


@pytest.mark.parametrize(("column", "arrow_type", "said"), [
    ("num", pa.float64(), "decimal128"),
    ("money", pa.decimal128(12, 3), "would round"),
    ("at", pa.timestamp("us"), "give it a zone"),
    ("local_at", pa.timestamp("us", tz="UTC"), "instant"),
    ("i4", pa.float64(), "integer"),
    ("i8", pa.string(), "integer"),
    ("uid", pa.int64(), "fixed_size_binary(16)"),
    ("flag", pa.int8(), "bool"),
    ("label", pa.int32(), "strings"),
    ("ids", pa.list_(pa.list_(pa.int64())), "nested lists"),
    ("ids", pa.list_(pa.float64()), "integer"),
])
async def test_arrow_inexact_types_are_refused_at_the_header(stub, db, column, arrow_type, said):
    schema = pa.schema([("id", pa.int64()), (column, arrow_type)])
    call = stub.BatchStream()
    await call.write(arrow_header("all_types", schema))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()  # before StreamOpened
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = caught.value.details()
    assert f'column "{column}"' in message and str(arrow_type) in message, message
    assert said in message, message


@pytest.mark.parametrize(("column", "arrow_type"), [
    ("tstz", pa.list_(pa.timestamp("us", tz="UTC"))),
    ("uids", pa.list_(pa.binary(16))),
    ("names", pa.list_(pa.string())),
    ("tt", pa.time64("us")),
    ("r", pa.string()),
])
async def test_arrow_unsupported_column_types_are_refused(stub, column, arrow_type):
    call = stub.BatchStream()
    await call.write(arrow_header("arrow_refused", pa.schema([(column, arrow_type)])))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f'column "{column}"' in caught.value.details()


async def test_arrow_schema_must_match_the_columns(stub):
    for schema, said in ((pa.schema([("id", pa.int64()), ("nope", pa.int64())]), "nope"),
                         (pa.schema([("id", pa.int64()), ("id", pa.int64())]), "twice")):
        call = stub.BatchStream()
        await call.write(arrow_header("all_types", schema))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert said in caught.value.details()
    call = stub.BatchStream()
    await call.write(arrow_header("all_types", pa.schema([("id", pa.int64())]),
                                  columns=["id", "i4"]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert 'no field "i4"' in caught.value.details()


async def test_arrow_type_refused_at_the_first_chunk_without_a_header_schema(stub, db):
    call, _ = await open_stream(stub, arrow_header("all_types", columns=["id", "num"],
                                                   mode=INDEPENDENT))
    table = pa.table({"id": pa.array([1], pa.int64()), "num": pa.array([0.1])})
    await call.write(arrow_chunk(1, table))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'column "num"' in caught.value.details() and "double" in caught.value.details()
    assert await db.fetchval("SELECT count(*) FROM all_types") == 0


async def test_arrow_malformed_chunk_is_invalid(stub):
    call, _ = await open_stream(stub, arrow_header("events", columns=["id", "kind"]))
    await call.write(Req(chunk=batch_pb2.StreamChunk(sequence=1, arrow=b"not arrow at all")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "chunk.arrow" in caught.value.details()


async def finish(call: Any) -> batch_pb2.StreamSummary:
    """End an INDEPENDENT stream (its slot is free again for the next test)."""
    await call.done_writing()
    return (await call.read()).summary


def events_table(start: int, count: int, **columns: Any) -> pa.Table:
    data: dict[str, Any] = {"id": pa.array(range(start, start + count), pa.int64()),
                            "kind": pa.array([f"k{i}" for i in range(count)]),
                            "score": pa.array([i % 10 for i in range(count)], pa.int64())}
    data.update(columns)
    return pa.table(data)


async def test_arrow_bad_rows_are_isolated_and_the_rest_written(stub, db):
    call, _ = await open_stream(stub, arrow_header("events", mode=INDEPENDENT))
    assert (await send(call, arrow_chunk(1, events_table(0, 100)))).ack.rows_written == 100
    ids = list(range(100, 1100))
    for i in (10, 500, 999):
        ids[i] = i  # duplicates of chunk 1's ids
    kinds: list[str | None] = [f"k{i}" for i in range(1000)]
    kinds[42] = None  # NOT NULL
    scores = [i for i in range(1000)]
    scores[7] = 2**40  # out of range for integer: rejected while decoding
    table = events_table(0, 1000, id=pa.array(ids, pa.int64()), kind=pa.array(kinds),
                         score=pa.array(scores, pa.int64()))
    ack = (await send(call, arrow_chunk(2, table))).ack
    assert ack.rows_written == 995
    by_code = {c.value[0]: c for c in grpc.StatusCode}
    codes = {r.chunk_index: (r.index, by_code[r.status.code]) for r in ack.rejected}
    assert codes == {7: (107, grpc.StatusCode.INVALID_ARGUMENT),
                     10: (110, grpc.StatusCode.ALREADY_EXISTS),
                     42: (142, grpc.StatusCode.INVALID_ARGUMENT),
                     500: (600, grpc.StatusCode.ALREADY_EXISTS),
                     999: (1099, grpc.StatusCode.ALREADY_EXISTS)}
    by_row = {r.chunk_index: r.status.message for r in ack.rejected}
    assert "score" in by_row[7] and "out of range" in by_row[7]
    assert (await finish(call)).rows_rejected == 5
    assert await db.fetchval("SELECT count(*) FROM events") == 1095


async def test_arrow_values_that_cannot_be_exact_reject_their_rows(stub, db):
    call, _ = await open_stream(stub, arrow_header("all_types", mode=INDEPENDENT))
    table = pa.table({
        "id": pa.array([1, 2, 3, 4, 5], pa.int64()),
        "uid": pa.array([str(UID), "not-a-uuid", "{" + str(UID)[1:] + "}", None, str(UID)]),
        "at": pa.array([1_000, 1_000, 1_000, 1_000_001, None], pa.timestamp("ns", tz="UTC")),
        "docb": pa.array(["{}", "[]", "1", "2", "{oops"]),
    })
    ack = (await send(call, arrow_chunk(1, table))).ack
    assert ack.rows_written == 1
    reasons = {r.chunk_index: r.status.message for r in ack.rejected}
    assert sorted(reasons) == [1, 2, 3, 4]
    assert "not a UUID" in reasons[1] and "uid" in reasons[1] and "not a UUID" in reasons[2]
    assert "nanoseconds" in reasons[3] and "at" in reasons[3]
    assert "json" in reasons[4].lower()
    await finish(call)
    assert await db.fetchval("SELECT uid FROM all_types WHERE id = 1") == UID


async def test_arrow_reject_chunk_option_writes_nothing_of_a_bad_chunk(stub, db):
    call, _ = await open_stream(stub, arrow_header(
        "events", mode=INDEPENDENT, bad_rows=batch_pb2.BAD_ROWS_REJECT_CHUNK))
    kinds: list[str | None] = ["a"] * 10
    kinds[4] = None
    ack = (await send(call, arrow_chunk(1, events_table(0, 10, kind=pa.array(kinds))))).ack
    assert ack.rows_written == 0 and [r.index for r in ack.rejected] == [4]
    ack = (await send(call, arrow_chunk(2, events_table(10, 10)))).ack
    assert ack.rows_written == 10
    await finish(call)
    assert await db.fetchval("SELECT count(*) FROM events") == 10


async def test_arrow_independent_resume_is_not_written_twice_and_acks_again(stub, db):
    chunks = [events_table(i * 100, 100) for i in range(4)]
    dup_kind: list[str | None] = [f"k{i}" for i in range(100)]
    dup_kind[3] = None
    chunks[1] = events_table(100, 100, kind=pa.array(dup_kind))
    head = arrow_header("events", chunks[0].schema, mode=INDEPENDENT, stream_id="arrow-resume")
    call, _ = await open_stream(stub, head)
    first = [(await send(call, arrow_chunk(s, chunks[s - 1]))).ack for s in (1, 2, 3)]
    call.cancel()
    await no_open_transaction(db)
    call, opened = await open_stream(stub, head)
    assert opened.last_committed_sequence == 3 and opened.next_row_index == 300
    again = [(await send(call, arrow_chunk(s, chunks[s - 1]))).ack for s in (2, 3)]
    assert all(a.duplicate for a in again)
    assert [(a.rows_written, list(a.rejected)) for a in again] == \
        [(f.rows_written, list(f.rejected)) for f in first[1:]]
    assert again[0].rows_written == 99 and again[0].rejected[0].index == 103
    assert not (await send(call, arrow_chunk(4, chunks[3]))).ack.duplicate
    assert (await finish(call)).last_committed_sequence == 4
    assert await db.fetchval("SELECT count(*) FROM events") == 399


async def test_arrow_atomic_commits_only_on_the_commit_message(stub, db):
    call, _ = await open_stream(stub, arrow_header("events"))
    for seq in (1, 2):
        ack = (await send(call, arrow_chunk(seq, events_table(seq * 1000, 500)))).ack
        assert ack.rows_written == 500
    assert await db.fetchval("SELECT count(*) FROM events") == 0
    assert (await send(call, COMMIT)).summary.rows_written == 1000
    assert await db.fetchval("SELECT count(*) FROM events") == 1000

    call, _ = await open_stream(stub, arrow_header("events"))
    await send(call, arrow_chunk(1, events_table(5000, 10)))
    await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await no_open_transaction(db)
    assert await db.fetchval("SELECT count(*) FROM events") == 1000


async def test_arrow_atomic_bad_row_fails_the_stream_and_rolls_back(stub, db):
    call, _ = await open_stream(stub, arrow_header("events"))
    await send(call, arrow_chunk(1, events_table(0, 100)))
    ids = list(range(100, 200))
    ids[37] = 5
    await call.write(arrow_chunk(2, events_table(100, 100, id=pa.array(ids, pa.int64()))))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "row 137 (chunk 2, row 37)" in caught.value.details()
    await no_open_transaction(db)
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_arrow_chunk_of_several_batches_and_dictionary_columns(stub, db):
    kinds = pa.array(["x", "y", "x", "y"]).dictionary_encode()
    table = pa.concat_tables([events_table(0, 4, kind=kinds), events_table(4, 4, kind=kinds)])
    assert len(table.to_batches()) == 2
    call, _ = await open_stream(stub, arrow_header("events"))
    assert (await send(call, arrow_chunk(1, table))).ack.rows_written == 8
    await send(call, COMMIT)
    got = [r["kind"] for r in await db.fetch("SELECT kind FROM events ORDER BY id")]
    assert got == ["x", "y"] * 4


async def test_arrow_list_elements_are_converted_and_checked(stub, db):
    call, _ = await open_stream(stub, arrow_header("all_types", mode=INDEPENDENT))
    grid = pa.array([[1, 2], [3, 2**40], None, [None]], pa.list_(pa.int64())).slice(0)
    table = pa.table({
        "id": pa.array([1, 2, 3, 4], pa.int64()),
        "ids": pa.array([[1], [2], [3, None], None], pa.list_(pa.int16())),
        "grid": grid,
        "tags": pa.array([["a"], ["b"], None, ["d"]], pa.list_(pa.string_view())),
    })
    ack = (await send(call, arrow_chunk(1, table.slice(0)))).ack
    assert ack.rows_written == 3
    assert [(r.chunk_index, "element 1" in r.status.message) for r in ack.rejected] == [(1, True)]
    rows = await db.fetch("SELECT id, ids, grid, tags FROM all_types ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, [1], [1, 2], ["a"]), (3, [3, None], None, None),
                                        (4, None, [None], ["d"])]
    # A slice of a list column (offsets not starting at 0) keeps its rows.
    ack = (await send(call, arrow_chunk(2, table.slice(2, 2).set_column(
        0, "id", pa.array([10, 11], pa.int64()))))).ack
    assert ack.rows_written == 2
    assert await db.fetchval("SELECT grid FROM all_types WHERE id = 11") == [None]
    await finish(call)


async def test_arrow_empty_and_compressed_chunks(stub, db):
    call, _ = await open_stream(stub, arrow_header("all_types", mode=INDEPENDENT))
    empty = pa.table({"id": pa.array([], pa.int64()), "uid": pa.array([], pa.string())})
    ack = (await send(call, arrow_chunk(1, empty))).ack
    assert (ack.rows_written, len(ack.rejected)) == (0, 0)
    table = pa.table({"id": pa.array(range(1000), pa.int64()),
                      "uid": pa.array([str(UID)] * 1000)})
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=300)
    chunk = batch_pb2.StreamChunk(sequence=2, arrow=sink.getvalue().to_pybytes())
    assert (await send(call, Req(chunk=chunk))).ack.rows_written == 1000
    assert (await finish(call)).rows_written == 1000
    assert await db.fetchval("SELECT count(DISTINCT uid) FROM all_types") == 1


async def test_arrow_values_beyond_postgresql_or_python_reject_their_rows(stub, db):
    call, _ = await open_stream(stub, arrow_header("all_types", mode=INDEPENDENT))
    table = pa.table({
        "id": pa.array([1, 2, 3, 4], pa.int64()),
        "at": pa.array([0, -(2**63) + 5, 2**62, None], pa.timestamp("s", tz="UTC")),
        "day": pa.array([0, 0, 0, -(2**31)], pa.date32()),
    })
    ack = (await send(call, arrow_chunk(1, table))).ack
    assert ack.rows_written == 1
    reasons = {r.chunk_index: r.status.message for r in ack.rejected}
    assert sorted(reasons) == [1, 2, 3]
    assert "out of range" in reasons[1] and "-9223372036854775803" in reasons[1]
    assert all(r.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
               for r in ack.rejected)
    await finish(call)


async def test_arrow_more_types_jsonb_arrays_enums_time_real(stub, db):
    await db.execute("DELETE FROM arrow_extra")
    table = pa.table({
        "id": pa.array([1, 2], pa.int32()),
        "docs": pa.array([['{"a": 1}', None, "[]"], None], pa.large_list(pa.string())),
        "moments": pa.array([[dt.datetime(2024, 1, 1, 0, 0, 0, 1)], []],
                            pa.list_(pa.timestamp("us"))),
        "at_time": pa.array([45_296_789, None], pa.time32("ms")),
        "ratio": pa.array([0.1, None], pa.float32()),
        "amounts": pa.array([[Decimal("1.50"), None], None], pa.list_(pa.decimal128(5, 2))),
        "flags": pa.array([[True, None, False], None], pa.list_(pa.bool_())),
        "mood": pa.array(["happy", "sad"]).dictionary_encode(),
    })
    call, _ = await open_stream(stub, arrow_header("arrow_extra", table.schema))
    ack = (await send(call, arrow_chunk(1, table))).ack
    assert ack.rows_written == 2 and not ack.rejected, ack
    assert (await send(call, COMMIT)).summary.committed
    row = await db.fetchrow("SELECT docs::text[] AS docs, moments, at_time::text AS at_time, "
                            "ratio, amounts::text AS amounts, flags, mood::text AS mood "
                            "FROM arrow_extra WHERE id = 1")
    assert row["docs"] == ['{"a": 1}', None, "[]"]
    assert row["moments"] == [dt.datetime(2024, 1, 1, 0, 0, 0, 1)]
    assert row["at_time"] == "12:34:56.789"
    assert row["ratio"] == pytest.approx(0.1) and row["amounts"] == "{1.50,NULL}"
    assert row["flags"] == [True, None, False] and row["mood"] == "happy"
    assert await db.fetchval("SELECT mood::text FROM arrow_extra WHERE id = 2") == "sad"
    await db.execute("DELETE FROM arrow_extra")
