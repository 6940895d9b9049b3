"""ATOMIC streams write the chunks already decoded and waiting in one COPY (fewer, longer
COPYs keep PostgreSQL busy); each still gets its own ack, and when PostgreSQL refuses a joined
COPY the chunks are written again one by one, so that the bad row is named exactly as before."""

from __future__ import annotations

from typing import Any

import grpc
import pyarrow as pa
import pytest

from batchd.stream.encodings import csv
from batchd.v1 import batch_pb2
from tests.support.batches import no_open_transaction
from tests.support.streams import COMMIT, Req, arrow_chunk, header, joining, open_stream


def columnar_chunk(sequence: int, ids: range) -> Req:
    return Req(chunk=batch_pb2.StreamChunk(sequence=sequence, columnar=batch_pb2.ColumnarRows(
        columns=[batch_pb2.ColumnValues(int64s=batch_pb2.Int64Array(values=list(ids))),
                 batch_pb2.ColumnValues(strings=batch_pb2.StringArray(
                     values=[f"k{i}" for i in ids])),
                 batch_pb2.ColumnValues(int64s=batch_pb2.Int64Array(
                     values=[i % 7 for i in ids]))])))


def csv_chunk(sequence: int, ids: range) -> Req:
    return Req(chunk=batch_pb2.StreamChunk(
        sequence=sequence, csv="".join(f"{i},k{i},{i % 7}\n" for i in ids).encode()))


def arrow_events(sequence: int, ids: range) -> Req:
    return arrow_chunk(sequence, pa.table({"id": pa.array(list(ids), pa.int64()),
                                           "kind": [f"k{i}" for i in ids],
                                           "score": pa.array([i % 7 for i in ids], pa.int32())}))


CHUNKS = {"ENCODING_COLUMNAR": columnar_chunk, "ENCODING_CSV": csv_chunk,
          "ENCODING_ARROW": arrow_events}


@pytest.fixture
def joined(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The writer starts late; the size of each joined COPY is recorded."""
    return joining(monkeypatch)


async def acks_until_end(call: Any) -> tuple[list[batch_pb2.ChunkAck], Any]:
    acks = []
    try:
        while (response := await call.read()) is not grpc.aio.EOF:
            if response.WhichOneof("kind") == "ack":
                acks.append(response.ack)
            elif response.WhichOneof("kind") == "summary":
                return acks, response.summary
    except grpc.aio.AioRpcError as exc:
        return acks, exc
    return acks, None


@pytest.mark.parametrize("encoding", list(CHUNKS))
async def test_waiting_chunks_share_one_copy_and_each_is_acked(stub, db, joined, encoding):
    call, _ = await open_stream(stub, header(table="events", columns=["id", "kind", "score"],
                                             encoding=encoding))
    for sequence in range(1, 5):
        await call.write(CHUNKS[encoding](sequence, range(100 * sequence, 100 * sequence + 100)))
    await call.write(COMMIT)
    acks, summary = await acks_until_end(call)
    assert joined and max(joined) > 1, "chunks waiting in the queue share a COPY"
    assert [(a.sequence, a.rows_written, len(a.rejected)) for a in acks] == \
        [(s, 100, 0) for s in range(1, 5)]
    assert summary.committed and summary.rows_written == 400 and summary.chunks == 4
    assert await db.fetchval("SELECT count(*) FROM events") == 400
    assert await db.fetchval("SELECT kind FROM events WHERE id = 499") == "k499"


@pytest.mark.parametrize("encoding", list(CHUNKS))
async def test_a_refused_joined_copy_names_the_bad_row_as_chunk_by_chunk(stub, db, joined,
                                                                         encoding):
    call, _ = await open_stream(stub, header(table="events", columns=["id", "kind", "score"],
                                             encoding=encoding))
    await call.write(CHUNKS[encoding](1, range(0, 100)))
    await call.write(CHUNKS[encoding](2, range(100, 200)))
    await call.write(CHUNKS[encoding](3, [*range(200, 237), 5, *range(238, 300)]))  # id 5 again
    await call.write(CHUNKS[encoding](4, range(300, 400)))
    await call.write(COMMIT)
    acks, error = await acks_until_end(call)
    assert joined and max(joined) > 1
    assert [a.sequence for a in acks] == [1, 2]  # written one by one after the refusal
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "row 237 (chunk 3, row 37)" in error.details()
    await no_open_transaction(db)
    assert await db.fetchval("SELECT count(*) FROM events") == 0


def test_csv_chunks_join_only_when_each_newline_ends_a_record():
    options = batch_pb2.CsvOptions()
    assert csv.whole_records(b"1,a,2\n2,b,3\n", options) == 2
    assert csv.whole_records(b"1,a,2\n2,b,3", options) is None  # no final newline
    assert csv.whole_records(b'1,"a\nb",2\n', options) is None  # a quoted newline
    assert csv.whole_records(b"1,'a',2\n", batch_pb2.CsvOptions(quote="'")) is None
    assert csv.whole_records(b'1,a"b,2\n', batch_pb2.CsvOptions(quote="'")) == 1


ODD_CSV = {
    "carriage returns": b"200,k,1\r\n201,k,2\r\n",
    "bare carriage returns": b"200,k,1\r201,k,2\r\n",
    "end-of-data marker": b"200,k,1\n\\.\n201,k,2\n",
    "empty line": b"200,k,1\n\n201,k,2\n",
}


@pytest.mark.parametrize("odd", list(ODD_CSV))
async def test_csv_that_postgresql_reads_otherwise_joined_is_written_as_alone(
        stub, db, joined, monkeypatch, odd):
    chunks = [csv_chunk(1, range(0, 100)), Req(chunk=batch_pb2.StreamChunk(
        sequence=2, csv=ODD_CSV[odd])), csv_chunk(3, range(300, 400))]

    async def outcome() -> tuple[Any, ...]:
        call, _ = await open_stream(stub, header(table="events",
                                                 columns=["id", "kind", "score"],
                                                 encoding="ENCODING_CSV"))
        for chunk in chunks:
            await call.write(chunk)
        await call.write(COMMIT)
        acks, end = await acks_until_end(call)
        await no_open_transaction(db)
        stored = [tuple(r) for r in await db.fetch("SELECT * FROM events ORDER BY id")]
        await db.execute("DELETE FROM events")
        ending = end.committed if isinstance(end, batch_pb2.StreamSummary) else \
            (end.code(), end.details())
        return [(a.sequence, a.rows_written) for a in acks], ending, stored

    together = await outcome()
    assert joined and max(joined) > 1
    monkeypatch.setattr(csv.CsvEncoding, "joinable", lambda self, decoded: False)
    assert together == await outcome()
