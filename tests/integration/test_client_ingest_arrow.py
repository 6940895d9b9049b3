"""batchd.client ingest of Arrow data (ENCODING_ARROW): pyarrow tables and readers, pandas and
polars DataFrames, Parquet and Feather files; refusals, rejects and resume."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from batchd.client import AckedChunk, AsyncClient, BatchdRpcError, Client
from batchd.client.arrow_source import fitting, ipc_stream, rechunk
from tests.support.batches import count
from tests.support.client_proxy import Proxy


@pytest.fixture
async def client(app):
    async with AsyncClient(f"127.0.0.1:{app.port}") as c:
        yield c


def events(start: int, n: int) -> pa.Table:
    return pa.table({"id": pa.array(range(start, start + n), pa.int64()),
                     "kind": [f"k{i}" for i in range(start, start + n)],
                     "score": pa.array([i % 7 for i in range(n)], pa.int32())})


async def event_ids(db: Any) -> list[int]:
    return [r["id"] for r in await db.fetch("SELECT id FROM events ORDER BY id")]


def test_rechunk_cuts_exact_chunks_across_batches():
    table = pa.concat_tables([events(0, 7), events(7, 5), events(12, 13)])
    sizes = [t.num_rows for t in rechunk(table.to_batches(), table.schema, 10)]
    assert sizes == [10, 10, 5]
    joined = pa.concat_tables(rechunk(table.to_batches(), table.schema, 4))
    assert joined.equals(table)


def test_chunks_too_large_for_a_message_are_halved():
    table = pa.table({"blob": [b"x" * 1000] * 100})
    limit = len(ipc_stream(table.slice(0, 30)))
    parts = list(fitting([table], limit))
    assert [t.num_rows for t, _ in parts] == [25, 25, 25, 25]
    assert all(len(data) <= limit for _, data in parts)
    assert pa.concat_tables(t for t, _ in parts).equals(table)


async def test_ingest_a_pyarrow_table(client, db):
    acks: list[AckedChunk] = []
    result = await client.ingest("events", events(0, 2500), chunk_rows=1000, on_ack=acks.append)
    assert result.committed and result.ok and result.rows_written == 2500
    assert [a.rows for a in acks] == [1000, 1000, 500]
    assert await event_ids(db) == list(range(2500))


async def test_ingest_arrow_reports_rejected_rows_and_refused_types(client, db):
    table = events(0, 100)
    ids = table["id"].to_pylist()
    ids[60] = 3  # a duplicate key
    table = table.set_column(0, "id", pa.array(ids, pa.int64()))
    result = await client.ingest("events", table, chunk_rows=50)
    assert (result.rows_written, result.rows_rejected) == (99, 1)
    assert [(r.index, r.sequence, r.chunk_index, r.code) for r in result.rejected] == \
        [(60, 2, 10, grpc.StatusCode.ALREADY_EXISTS)]
    with pytest.raises(BatchdRpcError) as caught:
        await client.ingest("all_types", pa.table({"id": [1], "num": [0.5]}))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert 'column "num"' in caught.value.message


async def test_ingest_a_record_batch_reader_and_selected_columns(client, db):
    table = events(0, 30).append_column("extra", pa.array(["x"] * 30))
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=7))
    result = await client.ingest("events", reader, columns=["id", "kind"], chunk_rows=10)
    assert result.rows_written == 30 and result.chunks == 3
    assert await db.fetchval("SELECT count(*) FROM events WHERE score IS NULL") == 30


async def test_ingest_a_pandas_dataframe(client, db):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({
        "id": [1, 2, 3],
        "num": [Decimal("12345678901234567890.000001"), None, Decimal("-1")],
        "at": pd.to_datetime(["2024-05-01T10:00:00.123456Z", None, "1970-01-01T00:00:00.000000Z"]),
        "label": ["a\nb", None, "c"],
        "i4": pd.array([1, None, -7], dtype="Int32"),
    })
    result = await client.ingest("all_types", frame)
    assert result.ok and result.rows_written == 3
    got = await db.fetch("SELECT id, num::text AS num, at, label, i4 FROM all_types ORDER BY id")
    assert [tuple(r) for r in got] == [
        (1, "12345678901234567890.000001", dt.datetime(2024, 5, 1, 10, 0, 0, 123456,
                                                        tzinfo=dt.UTC), "a\nb", 1),
        (2, None, None, None, None),
        (3, "-1.000000", dt.datetime(1970, 1, 1, tzinfo=dt.UTC), "c", -7)]


async def test_ingest_a_pandas_dataframe_with_naive_timestamps_is_refused(client, db):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"id": [1], "at": pd.to_datetime(["2024-05-01T10:00:00"])})
    with pytest.raises(BatchdRpcError) as caught:
        await client.ingest("all_types", frame)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert 'column "at"' in caught.value.message and "zone" in caught.value.message
    assert await count(db, "all_types") == 0


async def test_ingest_a_polars_dataframe(client, db):
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame({
        "id": [1, 2],
        "money": pl.Series([Decimal("10.50"), Decimal("-0.01")], dtype=pl.Decimal(12, 2)),
        "at": pl.Series([dt.datetime(2024, 1, 1, 12, 0, 0, 1), None],
                        dtype=pl.Datetime("us", "UTC")),
        "tags": [["x", "y"], []],
        "code": ["short", None],
        "day": [dt.date(2024, 2, 29), None],
        "ids": [[2**62, None], None],
    })
    result = await client.ingest("all_types", frame, chunk_rows=1)
    assert result.ok and result.chunks == 2
    row = await db.fetchrow("SELECT * FROM all_types WHERE id = 1")
    assert row["money"] == Decimal("10.50") and row["tags"] == ["x", "y"]
    assert row["at"] == dt.datetime(2024, 1, 1, 12, 0, 0, 1, tzinfo=dt.UTC)
    assert row["day"] == dt.date(2024, 2, 29) and row["ids"] == [2**62, None]
    assert (await db.fetchrow("SELECT money, code FROM all_types WHERE id = 2"))["code"] is None


async def test_ingest_parquet_and_feather_files(client, db, tmp_path: Path):
    pq.write_table(events(0, 1000), tmp_path / "a.parquet", row_group_size=300)
    feather.write_feather(events(1000, 500), tmp_path / "b.feather")
    first = await client.ingest("events", str(tmp_path / "a.parquet"), chunk_rows=400)
    second = await client.ingest("events", tmp_path / "b.feather", chunk_rows=400)
    assert (first.chunks, first.rows_written) == (3, 1000)
    assert (second.chunks, second.rows_written) == (2, 500)
    assert await event_ids(db) == list(range(1500))


async def test_sync_client_ingests_a_table(app, db):
    def run() -> Any:
        with Client(f"127.0.0.1:{app.port}") as client:
            return client.ingest("events", events(0, 10), mode="atomic")

    result = await asyncio.to_thread(run)  # the session's loop serves the server meanwhile
    assert result.committed and result.rows_written == 10


async def test_arrow_ingest_resumes_after_a_cut_connection_every_row_once(app, db):
    async with Proxy(app.port) as proxy:
        def cut_after_third(ack: AckedChunk) -> None:
            if ack.sequence == 3 and not proxy.accepted > 1:
                proxy.cut()

        async with AsyncClient(proxy.target) as client:
            result = await client.ingest("events", events(0, 1000), chunk_rows=100,
                                         max_in_flight=1, on_ack=cut_after_third)
    assert proxy.accepted == 2 and result.resumes == 1
    assert (result.chunks, result.rows_written) == (10, 1000)
    assert await event_ids(db) == list(range(1000))


async def test_arrow_encoding_needs_arrow_data(client):
    with pytest.raises(ValueError, match="arrow"):
        await client.ingest("events", [{"id": 1}], encoding="arrow")
    with pytest.raises(ValueError, match="arrow"):
        await client.ingest("events", events(0, 1), encoding="rows")
