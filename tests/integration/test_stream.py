"""BatchStream: atomic commit only on an explicit message, durable independent chunks, resume
without duplicates, bad rows reported, and every encoding."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest

from batchd.app import App
from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.support.batches import FAILED, ROLLED_BACK, SUCCEEDED, no_open_transaction
from tests.support.postgres import own_postgres, restart_postgres
from tests.support.servers import make_settings
from tests.support.streams import (
    COMMIT,
    INDEPENDENT,
    Req,
    columnar,
    events,
    header,
    open_stream,
    ops_chunk,
    rows_chunk,
    send,
)


async def count_events(db) -> int:
    return int(await db.fetchval("SELECT count(*) FROM events"))


# --- ATOMIC ----------------------------------------------------------------------------------

async def test_atomic_stream_commits_only_on_commit_message(stub, db):
    call, opened = await open_stream(stub, header(table="events"))
    assert opened.stream_id
    for seq in (1, 2, 3):
        ack = (await send(call, rows_chunk(seq, events(seq * 100, 100)))).ack
        assert (ack.sequence, ack.rows_written) == (seq, 100)
    assert await count_events(db) == 0  # not visible before the commit
    summary = (await send(call, COMMIT)).summary
    assert summary.committed and summary.rows_written == 300 and summary.chunks == 3
    assert await count_events(db) == 300


async def test_atomic_stream_ended_without_commit_rolls_back(stub, db):
    call, _ = await open_stream(stub, header(table="events"))
    await send(call, rows_chunk(1, events(0, 50)))
    await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "without a commit message" in caught.value.details()
    await no_open_transaction(db)
    assert await count_events(db) == 0


async def test_atomic_stream_cancelled_by_client_rolls_back(stub, db):
    call, _ = await open_stream(stub, header(table="events"))
    await send(call, rows_chunk(1, events(0, 50)))
    await send(call, rows_chunk(2, events(50, 50)))
    call.cancel()
    await no_open_transaction(db)
    assert await count_events(db) == 0


async def test_atomic_stream_past_its_deadline_rolls_back(stub, db):
    call, _ = await open_stream(stub, header(table="events"), timeout=1.0)
    await send(call, rows_chunk(1, events(0, 50)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()  # the client never commits; the deadline passes
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await no_open_transaction(db)
    assert await count_events(db) == 0


async def test_atomic_stream_rolls_back_on_server_shutdown(schema, db):
    app = await App.start(make_settings(schema))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        call, _ = await open_stream(stub, header(table="events"))
        await send(call, rows_chunk(1, events(0, 50)))
        await app.stop(grace=0.2)
        with pytest.raises(grpc.aio.AioRpcError):
            await call.read()
    finally:
        await channel.close()
    await no_open_transaction(db)
    assert await count_events(db) == 0


async def test_atomic_stream_fails_on_a_bad_row_naming_its_stream_index(stub, db):
    call, _ = await open_stream(stub, header(table="events"))
    await send(call, rows_chunk(1, events(0, 100)))
    bad = events(100, 100)
    bad[37]["kind"] = None  # NOT NULL: stream-wide row 137
    await call.write(rows_chunk(2, bad))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "row 137 (chunk 2, row 37)" in caught.value.details()
    await no_open_transaction(db)
    assert await count_events(db) == 0


async def test_first_message_must_be_a_header(stub):
    call = stub.BatchStream()
    await call.write(rows_chunk(1, events(0, 1)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_out_of_order_sequence_is_refused(stub, db):
    call, _ = await open_stream(stub, header(table="events"))
    await call.write(rows_chunk(2, events(0, 1)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "expected 1" in caught.value.details()


async def test_unknown_stream_table_is_invalid(stub):
    call = stub.BatchStream()
    await call.write(header(table="nope; DROP TABLE events", columns=["id"]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- INDEPENDENT -----------------------------------------------------------------------------

async def test_independent_chunks_are_durable_when_acked(stub, db):
    call, opened = await open_stream(stub, header(table="events", stream_id="durable-1",
                                                  **INDEPENDENT))
    assert opened.last_committed_sequence == 0
    await send(call, rows_chunk(1, events(0, 100)))
    assert await count_events(db) == 100  # committed before the ack
    await send(call, rows_chunk(2, events(100, 100)))
    await call.done_writing()
    summary = (await call.read()).summary
    assert summary.committed and summary.rows_written == 200
    assert summary.last_committed_sequence == 2


async def test_independent_cancel_keeps_exactly_the_acked_chunks(stub, db):
    call, _ = await open_stream(stub, header(table="events", **INDEPENDENT))
    for seq in (1, 2):
        await send(call, rows_chunk(seq, events(seq * 1000, 500)))
    call.cancel()
    await no_open_transaction(db)
    assert await count_events(db) == 1000


async def test_independent_bad_rows_are_reported_and_the_rest_written(stub, db):
    call, _ = await open_stream(stub, header(table="events", **INDEPENDENT))
    await send(call, rows_chunk(1, events(0, 10)))
    rows = events(10, 10)
    rows[2]["kind"] = None  # NOT NULL violation, found by PostgreSQL
    rows[5]["score"] = "many"  # wrong type, found while decoding
    rows[7]["id"] = "0"  # duplicate key of chunk 1
    ack = (await send(call, rows_chunk(2, rows))).ack
    assert ack.rows_written == 7
    reported = {(r.index, r.chunk_index, r.status.code) for r in ack.rejected}
    assert reported == {(12, 2, grpc.StatusCode.INVALID_ARGUMENT.value[0]),
                        (15, 5, grpc.StatusCode.INVALID_ARGUMENT.value[0]),
                        (17, 7, grpc.StatusCode.ALREADY_EXISTS.value[0])}
    assert "score" in next(r for r in ack.rejected if r.chunk_index == 5).status.message
    assert await count_events(db) == 17


@pytest.mark.parametrize("encoding", ["ENCODING_ROWS", "ENCODING_CSV"])
async def test_a_chunk_whose_every_row_is_refused_rejects_each_row(stub, db, encoding):
    """Each row refused at its own line: 3,000 rejections, one short COPY each (isolating
    them recursed once per row, past Python's limit: INTERNAL)."""
    await db.execute("INSERT INTO events (id, kind) "
                     "SELECT i, 'old' FROM generate_series(0, 3099) AS i")
    call, _ = await open_stream(stub, header(table="events", columns=["id", "kind", "score"],
                                             encoding=encoding, **INDEPENDENT))
    rows = events(0, 3000) + events(5000, 2)  # the last two are new
    if encoding == "ENCODING_CSV":
        data = "".join(f"{r['id']},{r['kind']},{r['score']}\n" for r in rows).encode()
        chunk = Req(chunk=batch_pb2.StreamChunk(sequence=1, csv=data))
    else:
        chunk = rows_chunk(1, rows)
    ack = (await send(call, chunk)).ack
    await call.done_writing()
    assert (await call.read()).summary.rows_written == 2
    assert ack.rows_written == 2
    assert [r.chunk_index for r in ack.rejected] == list(range(3000))
    assert {r.status.code for r in ack.rejected} == {grpc.StatusCode.ALREADY_EXISTS.value[0]}
    assert await count_events(db) == 3102


async def test_independent_reject_chunk_option_writes_nothing_of_a_bad_chunk(stub, db):
    call, _ = await open_stream(stub, header(table="events", bad_rows="BAD_ROWS_REJECT_CHUNK",
                                             **INDEPENDENT))
    rows = events(0, 10)
    rows[4]["kind"] = None
    ack = (await send(call, rows_chunk(1, rows))).ack
    assert ack.rows_written == 0 and [r.index for r in ack.rejected] == [4]
    ack = (await send(call, rows_chunk(2, events(10, 10)))).ack
    assert ack.rows_written == 10
    assert await count_events(db) == 10


async def test_resume_after_a_cut_connection_has_no_duplicates_and_no_gaps(stub, db):
    chunks = [events(i * 100, 100) for i in range(6)]
    call, _ = await open_stream(stub, header(table="events", stream_id="resume-cut",
                                             **INDEPENDENT))
    for seq in (1, 2, 3):
        await send(call, rows_chunk(seq, chunks[seq - 1]))
    # Cut batchd's database connections (the stream's among them), as a failover would.
    killed = await db.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE application_name = 'batchd'")
    assert killed >= 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(call, rows_chunk(4, chunks[3]))
        await call.read()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # The client does not know whether chunk 4 landed: it resumes and re-sends from 1.
    call, opened = await open_stream(stub, header(table="events", stream_id="resume-cut",
                                                  **INDEPENDENT))
    assert opened.last_committed_sequence == 3 and opened.next_row_index == 300
    duplicates = 0
    for seq in range(1, 7):
        ack = (await send(call, rows_chunk(seq, chunks[seq - 1]))).ack
        duplicates += ack.duplicate
    assert duplicates == 3
    await call.done_writing()
    assert (await call.read()).summary.last_committed_sequence == 6
    ids = [r["id"] for r in await db.fetch("SELECT id FROM events ORDER BY id")]
    assert ids == list(range(600))


async def test_resume_after_a_postgresql_restart_has_no_duplicates_and_no_gaps():
    """A PostgreSQL of its own, restarted under a running stream."""
    async with own_postgres() as (dsn, folder):
        setup = await asyncpg.connect(dsn)
        await setup.execute("CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, "
                            "score integer)")
        await setup.close()
        app = await App.start(make_settings(dsn, demo_schema=False, handler_modules=[],
                                            tables={}))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        chunks = [events(i * 100, 100) for i in range(5)]
        call, _ = await open_stream(stub, header(table="events", stream_id="restart",
                                                 **INDEPENDENT))
        for seq in (1, 2):
            await send(call, rows_chunk(seq, chunks[seq - 1]))
        await restart_postgres(folder)
        with pytest.raises(grpc.aio.AioRpcError):
            await send(call, rows_chunk(3, chunks[2]))
            await call.read()
        # Reopen until the pool has a live connection again, then resume.
        for _ in range(50):
            try:
                call, opened = await open_stream(stub, header(table="events",
                                                              stream_id="restart",
                                                              **INDEPENDENT))
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("could not reopen the stream")
        assert opened.last_committed_sequence == 2
        for seq in range(3, 6):
            ack = (await send(call, rows_chunk(seq, chunks[seq - 1]))).ack
            assert not ack.duplicate
        await call.done_writing()
        assert (await call.read()).summary.last_committed_sequence == 5
        check = await asyncpg.connect(dsn)
        ids = [r["id"] for r in await check.fetch("SELECT id FROM events ORDER BY id")]
        await check.close()
        assert ids == list(range(500))
        await channel.close()
        await app.stop(grace=1)


async def test_stream_id_is_bound_to_its_table(stub):
    call, _ = await open_stream(stub, header(table="events", stream_id="bound", **INDEPENDENT))
    await call.done_writing()
    await call.read()
    other = stub.BatchStream()
    await other.write(header(table="customers", columns=["name", "email"],
                             stream_id="bound", **INDEPENDENT))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await other.read()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# --- encodings -------------------------------------------------------------------------------

async def test_columnar_encoding_with_typed_arrays_and_nulls(stub, db):
    call, _ = await open_stream(stub, header(
        table="all_types", columns=["id", "i4", "num", "f8", "flag", "label", "at", "uid"],
        encoding="ENCODING_COLUMNAR"))
    ack = (await send(call, columnar(
        1,
        id={"int64s": {"values": ["9007199254740993", "2"]}},
        i4={"int64s": {"values": ["7", "0"]}, "nullIndexes": [1]},
        num={"strings": {"values": ["12345678901234567890.12", "0.1"]}},
        f8={"doubles": {"values": [1.5, -2.25]}},
        flag={"bools": {"values": [True, False]}},
        label={"strings": {"values": ["x", ""]}, "nullIndexes": [1]},
        at={"timestampMicros": {"values": ["1700000000123456", "0"]}},
        uid={"strings": {"values": ["6f1e4b1c-9a3b-4c8e-8f2e-0d9b1a7c5e33",
                                    "00000000-0000-0000-0000-000000000000"]}},
    ))).ack
    assert ack.rows_written == 2 and not ack.rejected
    await send(call, COMMIT)
    stored = await db.fetch("SELECT id, i4, num::text, f8, flag, label, at, uid::text "
                            "FROM all_types ORDER BY id")
    assert [tuple(r) for r in stored][1][:6] == (9007199254740993, 7,
                                                 "12345678901234567890.12", 1.5, True, "x")
    assert stored[0]["i4"] is None and stored[0]["label"] is None
    assert stored[1]["at"].isoformat() == "2023-11-14T22:13:20.123456+00:00"
    assert stored[0]["at"].isoformat() == "1970-01-01T00:00:00+00:00"


async def test_columnar_bad_value_rejects_its_row(stub, db):
    call, _ = await open_stream(stub, header(table="events", columns=["id", "kind", "score"],
                                             encoding="ENCODING_COLUMNAR", **INDEPENDENT))
    ack = (await send(call, columnar(
        1, id={"int64s": {"values": ["1", "2", "3"]}},
        kind={"strings": {"values": ["a", "b", "c"]}},
        score={"strings": {"values": ["1", "two", "3"]}}))).ack
    assert ack.rows_written == 2
    assert [(r.chunk_index, "score" in r.status.message) for r in ack.rejected] == [(1, True)]


async def test_csv_encoding_goes_straight_to_copy(stub, db):
    call, _ = await open_stream(stub, header(table="events", columns=["id", "kind", "score"],
                                             encoding="ENCODING_CSV"))
    data = "".join(f'{i},"k,{i}",{i % 7}\n' for i in range(1000)).encode()
    ack = (await send(call, Req(chunk=batch_pb2.StreamChunk(sequence=1, csv=data)))).ack
    assert ack.rows_written == 1000
    multiline = b'1000,"two\nlines",\n1001,plain,5\n'
    ack = (await send(call, Req(chunk=batch_pb2.StreamChunk(sequence=2, csv=multiline)))).ack
    assert ack.rows_written == 2
    await send(call, COMMIT)
    assert await count_events(db) == 1002
    assert await db.fetchval("SELECT kind FROM events WHERE id = 1000") == "two\nlines"
    assert await db.fetchval("SELECT score FROM events WHERE id = 1000") is None


async def test_csv_bad_records_are_isolated_in_independent_mode(stub, db):
    call, _ = await open_stream(stub, header(table="events", columns=["id", "kind", "score"],
                                             encoding="ENCODING_CSV", **INDEPENDENT))
    lines = [f"{i},k,{i}" for i in range(20)]
    lines[3] = "3,k,not-a-number"
    lines[11] = '11,"multi\nline",oops'
    ack = (await send(call, Req(chunk=batch_pb2.StreamChunk(
        sequence=1, csv=("\n".join(lines) + "\n").encode())))).ack
    assert ack.rows_written == 18
    assert sorted(r.index for r in ack.rejected) == [3, 11]
    assert all(r.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for r in ack.rejected)
    assert await count_events(db) == 18


# --- operations feed -------------------------------------------------------------------------

async def test_operations_feed_runs_in_the_stream_transaction(stub, db):
    call, _ = await open_stream(stub, header())
    ack = (await send(call, ops_chunk(1, [
        {"id": "c", "insert": {"table": "customers", "rows": [{"name": "f", "email": "f@x"}]}},
        {"id": "o", "insert": {"table": "orders", "rows": [{"customer_id": {"$ref": "c.id"}}]}},
    ]))).ack
    assert [r.outcome for r in ack.results] == [SUCCEEDED] * 2
    assert await db.fetchval("SELECT count(*) FROM orders") == 0
    assert (await send(call, COMMIT)).summary.committed
    assert await db.fetchval("SELECT count(*) FROM orders") == 1


async def test_independent_operations_feed_reports_a_failed_chunk_and_goes_on(stub, db):
    call, _ = await open_stream(stub, header(**INDEPENDENT))
    failed = (await send(call, ops_chunk(1, [
        {"id": "ok", "insert": {"table": "customers", "rows": [{"name": "a", "email": "a@x"}]}},
        {"id": "dup", "insert": {"table": "customers", "rows": [{"name": "b",
                                                                  "email": "a@x"}]}},
    ]))).ack
    assert [r.outcome for r in failed.results] == [ROLLED_BACK, FAILED]
    ok = (await send(call, ops_chunk(2, [
        {"id": "c", "insert": {"table": "customers", "rows": [{"name": "c", "email": "c@x"}]}},
    ]))).ack
    assert ok.results[0].outcome == SUCCEEDED
    assert await db.fetchval("SELECT count(*) FROM customers") == 1
