"""Streams and batches into declaratively partitioned tables (issue 19, item 3): rows routed by
PostgreSQL to range and list partitions, in every encoding; a row no partition takes is
rejected as a bad row naming the reason, the rest of its chunk written; a merging stream
upserts across partitions; GetSchema shows the parent, not its partitions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pyarrow as pa
import pytest

from batchd.stream import sink
from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.support.servers import own_server
from tests.support.streams import Req, arrow_chunk, header, open_stream, send

SETUP = """
DROP TABLE IF EXISTS part_days, part_regions;
CREATE TABLE part_days (id bigint NOT NULL, day date NOT NULL, note text,
                        PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE part_days_1 PARTITION OF part_days FOR VALUES FROM ('2026-12-01') TO ('2026-12-02');
CREATE TABLE part_days_2 PARTITION OF part_days FOR VALUES FROM ('2026-12-02') TO ('2026-12-03');
CREATE TABLE part_regions (id bigint NOT NULL, region text NOT NULL, note text,
                           PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE part_regions_eu PARTITION OF part_regions FOR VALUES IN ('eu');
CREATE TABLE part_regions_us PARTITION OF part_regions FOR VALUES IN ('us');
"""


@pytest.fixture
async def stub(schema: str, db: Any) -> AsyncIterator[batch_pb2_grpc.BatchServiceStub]:
    await db.execute(SETUP)  # before the server reads its catalog
    try:
        async with own_server(schema) as app, \
                grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield batch_pb2_grpc.BatchServiceStub(channel)
    finally:
        await db.execute("DROP TABLE IF EXISTS part_days, part_regions")


DAYS = [(1, "2026-12-01", "a"), (2, "2026-12-02", "b"), (3, "2026-12-09", "nowhere"),
        (4, "2026-12-01", "d")]


def days_chunk(encoding: str, sequence: int, rows: list[tuple[int, str, str]]) -> Req:
    if encoding == "ENCODING_CSV":
        return Req(chunk=batch_pb2.StreamChunk(
            sequence=sequence, csv="".join(f"{i},{d},{n}\n" for i, d, n in rows).encode()))
    if encoding == "ENCODING_ARROW":
        import datetime as dt
        return arrow_chunk(sequence, pa.table({
            "id": pa.array([r[0] for r in rows], pa.int64()),
            "day": pa.array([dt.date.fromisoformat(r[1]) for r in rows], pa.date32()),
            "note": [r[2] for r in rows]}))
    if encoding == "ENCODING_COLUMNAR":
        return Req(chunk=batch_pb2.StreamChunk(sequence=sequence, columnar=batch_pb2.ColumnarRows(
            columns=[batch_pb2.ColumnValues(int64s=batch_pb2.Int64Array(
                         values=[r[0] for r in rows])),
                     batch_pb2.ColumnValues(strings=batch_pb2.StringArray(
                         values=[r[1] for r in rows])),
                     batch_pb2.ColumnValues(strings=batch_pb2.StringArray(
                         values=[r[2] for r in rows]))])))
    from google.protobuf import struct_pb2
    structs = []
    for i, d, n in rows:
        s = struct_pb2.Struct()
        s.update({"id": i, "day": d, "note": n})
        structs.append(s)
    return Req(chunk=batch_pb2.StreamChunk(sequence=sequence, rows=structs))


async def placed(db: Any, table: str) -> dict[int, str]:
    return {r["id"]: r["part"] for r in await db.fetch(
        f"SELECT id, tableoid::regclass::text AS part FROM {table}")}


@pytest.mark.parametrize("encoding", ["ENCODING_ROWS", "ENCODING_COLUMNAR", "ENCODING_CSV",
                                      "ENCODING_ARROW"])
async def test_rows_go_to_their_range_partition_and_one_without_is_rejected(stub, db,
                                                                            encoding):
    call, _ = await open_stream(stub, header(
        table="part_days", columns=["id", "day", "note"], encoding=encoding,
        mode="MODE_INDEPENDENT", stream_id=f"part-{encoding}"))
    ack = (await send(call, days_chunk(encoding, 1, DAYS))).ack
    assert ack.rows_written == 3
    assert [r.chunk_index for r in ack.rejected] == [2]
    assert "no partition of relation" in ack.rejected[0].status.message
    assert await placed(db, "part_days") == {1: "part_days_1", 2: "part_days_2",
                                             4: "part_days_1"}
    await db.execute("DELETE FROM batchd.streams WHERE stream_id = $1", f"part-{encoding}")


@pytest.mark.parametrize("counting", ["as the server can", "present"])
async def test_a_merging_stream_upserts_across_list_partitions(stub, db, monkeypatch,
                                                               counting):
    """A partitioned table cannot return xmax: the merge counts by RETURNING old (PostgreSQL
    18), or (before it, forced here) by the keys present before it."""
    if counting == "present":
        monkeypatch.setattr(sink, "counting_for", lambda partitioned, version: "present")
    await db.execute("INSERT INTO part_regions VALUES (1, 'eu', 'old'), (2, 'us', 'old')")
    call, _ = await open_stream(stub, header(
        table="part_regions", columns=["id", "region", "note"], encoding="ENCODING_CSV",
        mode="MODE_INDEPENDENT", stream_id="part-merge",
        on_conflict={"action": "ACTION_UPDATE", "conflict_columns": ["id", "region"]}))
    ack = (await send(call, Req(chunk=batch_pb2.StreamChunk(
        sequence=1, csv=b"1,eu,new\n2,us,new\n3,eu,new\n4,asia,new\n")))).ack
    assert (ack.rows_inserted, ack.rows_updated, [r.chunk_index for r in ack.rejected]) == \
        (1, 2, [3])
    assert await placed(db, "part_regions") == {1: "part_regions_eu", 2: "part_regions_us",
                                                3: "part_regions_eu"}
    assert {r["note"] for r in await db.fetch("SELECT note FROM part_regions")} == {"new"}
    await db.execute("DELETE FROM batchd.streams WHERE stream_id = 'part-merge'")


async def test_get_schema_shows_the_parent_not_its_partitions(stub):
    tables = {t.name for t in (await stub.GetSchema(batch_pb2.GetSchemaRequest())).tables}
    assert {"public.part_days", "public.part_regions"} <= tables
    assert not {name for name in tables if name.startswith("public.part_days_")
                or name.startswith("public.part_regions_")}


async def test_a_batch_routes_its_inserts_and_names_a_row_without_partition(stub, db):
    from google.protobuf import json_format

    request = json_format.ParseDict({"mode": "MODE_INDEPENDENT", "operations": [
        {"id": "in", "insert": {"table": "part_days",
                                "rows": [{"id": 1, "day": "2026-12-02", "note": "x"}]}},
        {"id": "out", "insert": {"table": "part_days",
                                 "rows": [{"id": 2, "day": "2027-01-01", "note": "y"}]}},
    ]}, batch_pb2.BatchExecuteRequest())
    results = (await stub.BatchExecute(request)).results
    assert results[0].outcome == batch_pb2.OUTCOME_SUCCEEDED
    assert results[1].outcome == batch_pb2.OUTCOME_FAILED
    assert "no partition of relation" in results[1].status.message
    assert await placed(db, "part_days") == {1: "part_days_2"}
