"""batchd.client ingest (BatchStream) against the real server: every source and encoding,
rejected rows, atomic commit, and resume after a lost connection with every row written once.

Connections are cut by an in-process proxy (tests/support/proxy.py) at a point the test chooses
(from ``on_ack``, which runs before the chunk's window slot is freed), so what the server has
committed when the cut comes is known exactly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
import pytest

from batchd.client import (
    AckedChunk,
    AsyncClient,
    BatchdRpcError,
    Client,
    RetryEvent,
    RetryPolicy,
)
from batchd.client.sources import column_values, csv_records
from batchd.v1 import batch_pb2_grpc
from tests.support.batches import count, no_open_transaction
from tests.support.client_proxy import Proxy
from tests.support.ports import free_port
from tests.support.servers import own_server
from tests.support.streams import COMMIT, header, open_stream, rows_chunk, send


def events(start: int, n: int) -> list[dict[str, Any]]:
    return [{"id": i, "kind": f"k{i}", "score": i % 7} for i in range(start, start + n)]


@pytest.fixture
async def client(app):
    async with AsyncClient(f"127.0.0.1:{app.port}") as c:
        yield c


async def ledger_reaches(db: Any, stream_id: str, sequence: int) -> None:
    for _ in range(400):
        last = await db.fetchval("SELECT coalesce(max(sequence), 0) FROM batchd.stream_chunks "
                                 "WHERE stream_id = $1", stream_id)
        if last >= sequence:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"chunk {sequence} of {stream_id} never committed")


async def event_ids(db: Any) -> list[int]:
    return [r["id"] for r in await db.fetch("SELECT id FROM events ORDER BY id")]


# --- sources and encodings -----------------------------------------------------------------

async def test_rows_are_streamed_in_chunks_and_counted(client, db):
    result = await client.ingest("events", events(0, 2500), chunk_rows=1000)
    assert (result.chunks, result.rows_written, result.rows_rejected) == (3, 2500, 0)
    assert result.committed and result.ok and result.mode == "independent"
    assert result.stream_id.startswith("ingest-") and result.last_sequence == 3
    assert (result.resumes, result.skipped_chunks) == (0, 0)
    assert await event_ids(db) == list(range(2500))


async def test_async_rows_and_on_ack_for_every_chunk(client, db):
    async def rows() -> AsyncIterator[dict[str, Any]]:
        for row in events(0, 250):
            yield row

    acks: list[AckedChunk] = []
    result = await client.ingest("events", rows(), chunk_rows=100, on_ack=acks.append)
    assert [(a.sequence, a.rows, a.rows_written, a.duplicate) for a in acks] == \
        [(1, 100, 100, False), (2, 100, 100, False), (3, 50, 50, False)]
    assert result.rows_written == 250 and await count(db, "events") == 250


async def test_rejected_rows_are_reported_with_their_index_and_reason(client, db):
    rows = events(0, 300)
    rows[5]["kind"] = None  # NOT NULL
    rows[250]["score"] = "many"  # not an integer
    rows[299]["id"] = 0  # duplicate key
    result = await client.ingest("events", rows, chunk_rows=100)
    assert (result.rows_written, result.rows_rejected) == (297, 3) and not result.ok
    rejected = {r.index: r for r in result.rejected}
    assert sorted(rejected) == [5, 250, 299]
    assert (rejected[250].sequence, rejected[250].chunk_index) == (3, 50)
    assert rejected[5].code == grpc.StatusCode.INVALID_ARGUMENT
    assert "score" in rejected[250].message
    assert rejected[299].code == grpc.StatusCode.ALREADY_EXISTS
    assert rejected[299].reason == "UNIQUE_VIOLATION"
    assert await count(db, "events") == 297


async def test_reject_chunk_writes_nothing_of_a_chunk_with_a_bad_row(client, db):
    rows = events(0, 20)
    rows[3]["kind"] = None
    result = await client.ingest("events", rows, chunk_rows=10, bad_rows="reject_chunk")
    assert result.rows_written == 10 and [r.index for r in result.rejected] == [3]
    assert await event_ids(db) == list(range(10, 20))


async def test_csv_file_with_a_header_is_cut_at_whole_records(client, db, tmp_path):
    lines = ["id,kind,score"]
    for i in range(50):
        kind = f'"multi\nline ""{i}"""' if i % 3 == 0 else f"k{i}"
        lines.append(f"{i},{kind},{i % 5}")
    path = tmp_path / "events.csv"
    path.write_bytes(("\r\n".join(lines)).encode())  # CRLF, no newline at the end
    result = await client.ingest("events", path, chunk_rows=4)
    assert (result.rows_written, result.chunks) == (50, 13)
    assert await count(db, "events") == 50
    assert await db.fetchval("SELECT kind FROM events WHERE id = 3") == 'multi\nline "3"'


async def test_csv_bytes_and_binary_files_with_columns_and_null(client, db):
    data = b"1;one;NULL\n2;two;5\n"
    result = await client.ingest("events", data, columns=["id", "kind", "score"],
                                 delimiter=";", null="NULL")
    assert result.rows_written == 2
    assert await db.fetchval("SELECT score FROM events WHERE id = 1") is None
    result = await client.ingest("events", io.BytesIO(b"id,kind\n3,three\n"), header=True,
                                 columns=["id", "kind"])  # the header line is skipped
    assert result.rows_written == 1 and await count(db, "events") == 3
    with pytest.raises(TypeError, match="binary mode"):
        await client.ingest("events", io.StringIO("id,kind\n"))
    with pytest.raises(ValueError, match="inside a quoted field"):
        await client.ingest("events", b'id,kind\n4,"open\n', mode="atomic")
    assert await count(db, "events") == 3


async def test_a_mapping_of_columns_is_sent_columnar_with_exact_types(client, db):
    at = dt.datetime(2024, 2, 29, 12, 0, 0, 123456, tzinfo=dt.UTC)
    uid = uuid.UUID(int=7)
    result = await client.ingest("all_types", {
        "id": [1, 2, 3],
        "i8": [2**62, None, -1],
        "num": [Decimal("12345678901234567890.123"), Decimal("0.1"), None],
        "f8": [1.5, 2, None],
        "flag": [True, False, None],
        "label": ["x", None, ""],
        "at": [at, None, at],
        "uid": [uid, None, None],
        "blob": [b"\x00\xff", None, b""],
        "day": [dt.date(2024, 1, 2), None, None],
    }, chunk_rows=2)
    assert (result.rows_written, result.chunks, result.rows_rejected) == (3, 2, 0)
    row = await db.fetchrow("SELECT * FROM all_types WHERE id = 1")
    assert (row["i8"], row["num"], row["f8"], row["flag"], row["label"]) == \
        (2**62, Decimal("12345678901234567890.123"), 1.5, True, "x")
    assert (row["at"], row["uid"], row["blob"], row["day"]) == \
        (at, uid, b"\x00\xff", dt.date(2024, 1, 2))
    second = await db.fetchrow("SELECT i8, f8, label, at FROM all_types WHERE id = 2")
    assert tuple(second) == (None, 2.0, None, None)


async def test_rows_may_be_sent_columnar(client, db):
    result = await client.ingest("events", events(0, 120), encoding="columnar", chunk_rows=50)
    assert (result.rows_written, result.chunks) == (120, 3)
    assert await event_ids(db) == list(range(120))


# --- atomic ----------------------------------------------------------------------------------

async def test_atomic_ingest_commits_only_at_the_end(client, db):
    seen: list[int] = []

    async def look(ack: AckedChunk) -> None:
        seen.append(await count(db, "events"))  # the transaction is not committed yet

    result = await client.ingest("events", events(0, 300), mode="atomic", chunk_rows=100,
                                 on_ack=look)
    assert result.committed and result.rows_written == 300 and result.mode == "atomic"
    assert seen == [0, 0, 0] and await count(db, "events") == 300


async def test_atomic_ingest_with_a_bad_row_raises_and_commits_nothing(client, db):
    rows = events(0, 300)
    rows[150]["kind"] = None
    with pytest.raises(BatchdRpcError) as caught:
        await client.ingest("events", rows, mode="atomic", chunk_rows=100)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == "BAD_ROW" and caught.value.error_info["row_index"] == "150"
    await no_open_transaction(db)
    assert await count(db, "events") == 0


async def test_a_failing_source_cancels_the_stream_and_is_raised(client, db):
    def rows() -> Any:
        yield from events(0, 100)
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        await client.ingest("events", rows(), mode="atomic", chunk_rows=10)
    await no_open_transaction(db)
    assert await count(db, "events") == 0


# --- resume ----------------------------------------------------------------------------------

async def test_a_cut_connection_is_resumed_and_every_row_written_once(app, db):
    async with Proxy(app.port) as proxy:
        def cut_after_third(ack: AckedChunk) -> None:
            if ack.sequence == 3 and not proxy.accepted > 1:
                proxy.cut()  # chunk 3 is acknowledged; nothing after it was sent

        async with AsyncClient(proxy.target) as client:
            result = await client.ingest("events", events(0, 1000), chunk_rows=100,
                                         max_in_flight=1, on_ack=cut_after_third)
    assert proxy.accepted == 2 and result.resumes == 1
    assert (result.chunks, result.rows_written) == (10, 1000)
    assert await event_ids(db) == list(range(1000))
    assert result.rows_written == await count(db, "events")


async def test_a_chunk_committed_after_its_ack_was_lost_is_not_sent_again(app, db):
    """The server commits chunk 3 but its ack never arrives: the resume sends it again and its
    first ack comes back, so the totals are exact."""
    paused = asyncio.Event()
    retries: list[RetryEvent] = []
    async with Proxy(app.port) as proxy:
        def pause_after_second(ack: AckedChunk) -> None:
            if ack.sequence == 2 and not paused.is_set():
                proxy.pause()
                paused.set()

        async with AsyncClient(proxy.target, on_retry=retries.append) as client:
            ingest = asyncio.ensure_future(client.ingest(
                "events", events(0, 1000), chunk_rows=100, max_in_flight=1,
                stream_id="lost-ack", on_ack=pause_after_second))
            await paused.wait()
            await ledger_reaches(db, "lost-ack", 3)  # committed, its ack held back
            proxy.cut()
            result = await ingest
    assert [e.error.code for e in retries] == [grpc.StatusCode.UNAVAILABLE]
    assert result.resumes == 1
    assert (result.chunks, result.rows_written, result.last_sequence) == (10, 1000, 10)
    assert await event_ids(db) == list(range(1000))  # every row once
    assert result.rows_written == await count(db, "events")


class Interrupted(Exception):
    pass


async def test_a_later_ingest_with_the_same_stream_id_goes_on_where_one_stopped(client, db):
    def stop_after_third(ack: AckedChunk) -> None:
        if ack.sequence == 3:
            raise Interrupted  # say, the process was stopped here

    with pytest.raises(Interrupted):
        await client.ingest("events", events(0, 1000), chunk_rows=100, max_in_flight=1,
                            stream_id="later", on_ack=stop_after_third)
    assert await count(db, "events") == 300
    result = await client.ingest("events", events(0, 1000), chunk_rows=100, stream_id="later")
    assert (result.skipped_chunks, result.chunks, result.rows_written) == (3, 7, 700)
    assert await event_ids(db) == list(range(1000))


@pytest.mark.parametrize("mode", ["independent", "atomic"])
async def test_a_stream_refused_at_admission_is_retried(schema, db, mode):
    async with own_server(schema, max_concurrent_streams=1) as app:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        held, _ = await open_stream(stub, header(table="events"))  # the one slot
        retries: list[RetryEvent] = []

        async def finish_held(event: RetryEvent) -> None:
            retries.append(event)
            await send(held, rows_chunk(1, [{"id": "-1", "kind": "held", "score": 0}]))
            assert (await send(held, COMMIT)).summary.committed
            await held.code()  # the server has finished it: the slot is free

        async with AsyncClient(f"127.0.0.1:{app.port}", on_retry=finish_held) as client:
            result = await client.ingest("events", events(0, 10), mode=mode)
        await channel.close()
    assert [(e.method, e.error.reason) for e in retries] == \
        [("BatchStream", "TOO_MANY_CONCURRENT")]
    assert result.committed and result.rows_written == 10 and result.resumes == 0
    assert await count(db, "events") == 11


async def test_an_unreachable_server_fails_the_ingest_after_the_attempts(db):
    port = free_port()
    retries: list[RetryEvent] = []
    policy = RetryPolicy(max_attempts=3, jitter=lambda cap: 0.0)
    async with AsyncClient(f"127.0.0.1:{port}", retry=policy, on_retry=retries.append) as client:
        with pytest.raises(BatchdRpcError) as caught:
            await client.ingest("events", events(0, 10))
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert [e.attempt for e in retries] == [1, 2]


async def test_sync_client_ingests_too(app, db):
    def run() -> Any:
        with Client(f"127.0.0.1:{app.port}") as client:
            return client.ingest("events", events(0, 150), chunk_rows=100)

    result = await asyncio.to_thread(run)
    assert result.rows_written == 150 and result.chunks == 2
    assert await count(db, "events") == 150


# --- pure ------------------------------------------------------------------------------------

def test_csv_records_follow_quote_parity():
    data = b'1,"a\nb",x\n2,"say ""hi""",y\r\n3,"""",z\n4,last'
    assert list(csv_records(io.BytesIO(data))) == [
        b'1,"a\nb",x\n', b'2,"say ""hi""",y\r\n', b'3,"""",z\n', b"4,last\n"]
    assert list(csv_records(io.BytesIO(b"1,'a\n',b\n"), quote=b"'")) == [b"1,'a\n',b\n"]
    with pytest.raises(ValueError):
        list(csv_records(io.BytesIO(b'1,"open\n2,x\n')))


def test_columns_take_the_narrowest_typed_array():
    def which(values: list[Any]) -> str:
        return column_values(values).WhichOneof("values")

    assert which([1, None, 2]) == "int64s" and which([True, None]) == "bools"
    assert which([1, 2.5]) == "doubles" and which(["a", None]) == "strings"
    assert which([b"x"]) == "bytes" and which([dt.datetime.now(dt.UTC)]) == "timestamp_micros"
    assert which([2**70]) == "strings" and which([Decimal("1.5"), 1]) == "strings"
    assert which([None, None]) == "strings" and which([dt.datetime(2024, 1, 1)]) == "strings"
    values = column_values([3, None, 4])
    assert list(values.int64s.values) == [3, 0, 4] and list(values.null_indexes) == [1]
    with pytest.raises(TypeError):
        column_values([{"a": 1}])

