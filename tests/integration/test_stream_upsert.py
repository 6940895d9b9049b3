"""Streams that merge (StreamHeader.on_conflict): every encoding x action against the real
PostgreSQL, the same key twice in a chunk (the last row wins) and across chunks (the later
chunk wins), the counts of inserted, updated and unchanged rows exact, a resume that re-sends
chunks leaving each key's final row as if the stream had run once, and the checks at open."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest

from batchd.client import AsyncClient
from batchd.v1 import batch_pb2
from tests.support.batches import no_open_transaction
from tests.support.streams import (
    COMMIT,
    Req,
    arrow_chunk,
    ended_with,
    header,
    joining,
    open_stream,
)

Row = tuple[int, str, int]

BEFORE: list[Row] = [*((i, "old", i) for i in range(9)), (9, "new", 9)]
# The same key twice: 7 (present), 12 (new); 9 is sent as it already is.
CHUNK_1: list[Row] = [(5, "new", 5), (6, "new", 6), (7, "first", 0), (7, "new", 7),
                      (8, "new", 8), (9, "new", 9), (10, "new", 10), (11, "new", 11),
                      (12, "first", 0), (12, "new", 12), (13, "new", 13), (14, "new", 14)]
CHUNK_2: list[Row] = [(14, "later", 1), (3, "later", 1)]  # a key of chunk 1, a key before


def chunk(encoding: str, sequence: int, rows: list[Row]) -> Req:
    ids, kinds, scores = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    if encoding == "ENCODING_ROWS":
        return Req(chunk=batch_pb2.StreamChunk(sequence=sequence, rows=[
            _struct({"id": i, "kind": k, "score": s}) for i, k, s in rows]))
    if encoding == "ENCODING_COLUMNAR":
        return Req(chunk=batch_pb2.StreamChunk(sequence=sequence, columnar=batch_pb2.ColumnarRows(
            columns=[batch_pb2.ColumnValues(int64s=batch_pb2.Int64Array(values=ids)),
                     batch_pb2.ColumnValues(strings=batch_pb2.StringArray(values=kinds)),
                     batch_pb2.ColumnValues(int64s=batch_pb2.Int64Array(values=scores))])))
    if encoding == "ENCODING_CSV":
        return Req(chunk=batch_pb2.StreamChunk(
            sequence=sequence, csv="".join(f"{i},{k},{s}\n" for i, k, s in rows).encode()))
    return arrow_chunk(sequence, pa.table({"id": pa.array(ids, pa.int64()), "kind": kinds,
                                           "score": pa.array(scores, pa.int32())}))


def _struct(values: dict[str, Any]) -> Any:
    from google.protobuf import struct_pb2
    out = struct_pb2.Struct()
    out.update(values)
    return out


def merging(encoding: str, action: str, **fields: Any) -> Req:
    on_conflict = {"action": action, **fields}
    return header(table="events", columns=["id", "kind", "score"], encoding=encoding,
                  onConflict=on_conflict, **({"mode": "MODE_INDEPENDENT"}
                                             if "streamId" not in on_conflict else {}))


async def table(db: Any) -> dict[int, tuple[str, int]]:
    return {r["id"]: (r["kind"], r["score"]) for r in
            await db.fetch("SELECT id, kind, score FROM events ORDER BY id")}


async def seed(db: Any) -> None:
    await db.executemany("INSERT INTO events (id, kind, score) VALUES ($1, $2, $3)", BEFORE)


def counts(ack: Any) -> tuple[int, int, int, int, int]:
    return (ack.rows_written, ack.rows_inserted, ack.rows_updated, ack.rows_unchanged,
            len(ack.rejected))


ENCODINGS = ["ENCODING_ROWS", "ENCODING_COLUMNAR", "ENCODING_CSV", "ENCODING_ARROW"]

# action: (chunk 1's counts, chunk 2's counts, the rows that differ from BEFORE afterwards)
EXPECTED: dict[str, tuple[Any, Any, dict[int, tuple[str, int]]]] = {
    "ACTION_UPDATE": (
        (9, 5, 4, 3, 0), (2, 0, 2, 0, 0),
        {3: ("later", 1), 5: ("new", 5), 6: ("new", 6), 7: ("new", 7), 8: ("new", 8),
         10: ("new", 10), 11: ("new", 11), 12: ("new", 12), 13: ("new", 13),
         14: ("later", 1)}),
    "ACTION_DO_NOTHING": (
        (5, 5, 0, 7, 0), (0, 0, 0, 2, 0),
        {10: ("new", 10), 11: ("new", 11), 12: ("new", 12), 13: ("new", 13),
         14: ("new", 14)}),
    # No merging: an append; a key present, or sent twice, rejects its row (the first wins).
    "ACTION_ERROR": (
        (5, 0, 0, 0, 7), (0, 0, 0, 0, 2),
        {10: ("new", 10), 11: ("new", 11), 12: ("first", 0), 13: ("new", 13),
         14: ("new", 14)}),
}


@pytest.mark.parametrize("action", list(EXPECTED))
@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_every_encoding_merges_as_its_action_says(stub, db, encoding, action):
    await seed(db)
    call, _ = await open_stream(stub, merging(encoding, action))
    acks = []
    for sequence, rows in ((1, CHUNK_1), (2, CHUNK_2)):
        await call.write(chunk(encoding, sequence, rows))
        acks.append((await call.read()).ack)
    await call.done_writing()
    summary = (await call.read()).summary
    first, second, changed = EXPECTED[action]
    assert [counts(a) for a in acks] == [first, second]
    assert (summary.rows_written, summary.rows_inserted, summary.rows_updated,
            summary.rows_unchanged, summary.rows_rejected) == \
        tuple(a + b for a, b in zip(first, second, strict=True))
    assert await table(db) == {**{i: (k, s) for i, k, s in BEFORE}, **changed}


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_an_atomic_stream_merges_chunk_by_chunk_even_joined(stub, db, monkeypatch,
                                                                 encoding):
    """The writer starts late, so the waiting chunks share one COPY (batchd.stream.joined);
    each chunk's ack still counts what it did, as if written alone."""
    sizes = joining(monkeypatch)
    await seed(db)
    call, _ = await open_stream(stub, header(
        table="events", columns=["id", "kind", "score"], encoding=encoding,
        onConflict={"action": "ACTION_UPDATE"}))
    for sequence, rows in ((1, CHUNK_1), (2, CHUNK_2), (3, [(14, "last", 2)])):
        await call.write(chunk(encoding, sequence, rows))
    await call.write(COMMIT)
    acks = [(await call.read()).ack for _ in range(3)]
    summary = (await call.read()).summary
    assert summary.committed
    assert sizes and max(sizes) > 1, "the waiting chunks shared a COPY"
    assert [counts(a) for a in acks] == [(9, 5, 4, 3, 0), (2, 0, 2, 0, 0), (1, 0, 1, 0, 0)]
    rows = await table(db)
    assert rows[14] == ("last", 2) and rows[3] == ("later", 1) and rows[7] == ("new", 7)
    await no_open_transaction(db)


async def test_a_bad_row_is_rejected_and_the_others_merged(stub, db):
    await seed(db)
    call, _ = await open_stream(stub, merging("ENCODING_ROWS", "ACTION_UPDATE"))
    await call.write(Req(chunk=batch_pb2.StreamChunk(sequence=1, rows=[
        _struct({"id": 1, "kind": "new", "score": 1}),
        _struct({"id": 2, "kind": None, "score": 2}),  # kind is NOT NULL
        _struct({"id": 20, "kind": "new", "score": 20})])))
    ack = (await call.read()).ack
    assert counts(ack) == (2, 1, 1, 0, 1)
    assert ack.rejected[0].chunk_index == 1
    assert "kind" in ack.rejected[0].status.message
    await call.done_writing()
    assert (await call.read()).summary.committed
    rows = await table(db)
    assert rows[1] == ("new", 1) and rows[2] == ("old", 2) and rows[20] == ("new", 20)


async def reopen(stub: Any, head: Req) -> tuple[Any, Any]:
    """The stream again, once the server has let the cancelled one go (its slot)."""
    for _ in range(100):
        try:
            return await open_stream(stub, head)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError("the stream could not be reopened")


async def test_a_resumed_stream_leaves_each_keys_final_row_as_if_it_ran_once(stub, db):
    """Chunks re-sent after a lost connection are answered from the ledger, not merged again:
    chunk 1 merged again after chunk 2 would undo chunk 2's update of key 14."""
    await seed(db)
    head = header(table="events", columns=["id", "kind", "score"], encoding="ENCODING_CSV",
                  mode="MODE_INDEPENDENT", streamId="upsert-resume",
                  onConflict={"action": "ACTION_UPDATE"})
    chunks = [chunk("ENCODING_CSV", 1, CHUNK_1), chunk("ENCODING_CSV", 2, CHUNK_2)]
    call, _ = await open_stream(stub, head)
    for request in chunks:
        await call.write(request)
    first = [(await call.read()).ack for _ in chunks]
    call.cancel()  # the connection is lost before the client heard of a commit
    call, opened = await reopen(stub, head)
    assert opened.last_committed_sequence == 2
    for request in [*chunks, chunk("ENCODING_CSV", 3, [(12, "third", 3)])]:
        await call.write(request)
    again = [(await call.read()).ack for _ in range(3)]
    await call.done_writing()
    assert (await call.read()).summary.committed
    assert [a.duplicate for a in again] == [True, True, False]
    assert [counts(a) for a in again[:2]] == [counts(a) for a in first]
    assert counts(again[2]) == (1, 0, 1, 0, 0)
    rows = await table(db)
    assert rows[14] == ("later", 1) and rows[3] == ("later", 1) and rows[12] == ("third", 3)


async def test_a_unique_key_other_than_the_primary_key_merges(stub, db):
    """products.sku is UNIQUE: a daily price list by sku, the id left to its identity."""
    call, _ = await open_stream(stub, header(
        table="products", columns=["sku", "name", "price"], encoding="ENCODING_CSV",
        mode="MODE_INDEPENDENT",
        onConflict={"action": "ACTION_UPDATE", "conflictColumns": ["sku"],
                    "updateColumns": ["price"]}))
    await call.write(Req(chunk=batch_pb2.StreamChunk(
        sequence=1, csv=b"KB-01,Renamed,39.90\nMS-01,Mouse,19.99\nHD-01,Headset,89.00\n")))
    assert counts((await call.read()).ack) == (2, 1, 1, 1, 0)
    await call.done_writing()
    await call.read()
    rows = {r["sku"]: (r["name"], str(r["price"])) for r in
            await db.fetch("SELECT sku, name, price FROM products")}
    assert rows == {"KB-01": ("Keyboard", "39.90"), "MS-01": ("Mouse", "19.99"),
                    "HD-01": ("Headset", "89.00")}


@pytest.mark.parametrize(("on_conflict", "field"), [
    ({"action": "ACTION_UPDATE", "conflictColumns": ["kind"]},
     "header.on_conflict.conflict_columns"),  # not a unique key
    ({"action": "ACTION_UPDATE", "conflictColumns": ["nope"]},
     "header.on_conflict.conflict_columns[0]"),
    ({"action": "ACTION_UPDATE", "updateColumns": ["id"], "conflictColumns": ["id", "id"]},
     "header.on_conflict.conflict_columns[1]"),
    ({"action": "ACTION_DO_NOTHING", "updateColumns": ["kind"]},
     "header.on_conflict.update_columns"),
    ({"action": "ACTION_ERROR", "conflictColumns": ["id"]}, "header.on_conflict"),
])
async def test_a_conflict_clause_the_table_cannot_take_is_refused_at_open(stub, db,
                                                                          on_conflict, field):
    call = stub.BatchStream()
    await call.write(header(table="events", columns=["id", "kind", "score"],
                            encoding="ENCODING_CSV", onConflict=on_conflict))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()


async def test_update_columns_must_be_sent(stub, db):
    call = stub.BatchStream()
    await call.write(header(table="events", columns=["id", "kind"], encoding="ENCODING_CSV",
                            onConflict={"action": "ACTION_UPDATE",
                                        "updateColumns": ["score"]}))
    code, _ = await ended_with(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_client_ingests_with_on_conflict(app, db):
    await seed(db)
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        result = await client.ingest(
            "events", [{"id": i, "kind": k, "score": s} for i, k, s in CHUNK_1],
            on_conflict="update", chunk_rows=100)
    assert (result.rows_written, result.rows_inserted, result.rows_updated,
            result.rows_unchanged, result.rows_rejected) == (9, 5, 4, 3, 0)
    assert (await table(db))[12] == ("new", 12)


BATCHD = Path(sys.executable).parent / "batchd"


async def test_batchd_ingest_upsert_loads_a_daily_snapshot(app, db, tmp_path):
    await seed(db)
    snapshot = tmp_path / "events.csv"
    snapshot.write_text("id,kind,score\n" + "".join(f"{i},{k},{s}\n" for i, k, s in CHUNK_1))
    proc = await asyncio.create_subprocess_exec(
        str(BATCHD), "ingest", str(snapshot), "--table", "events", "--upsert", "id",
        "--update", "kind,score", "--target", f"127.0.0.1:{app.port}", "--quiet",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()
    assert "(5 inserted, 4 updated; 3 unchanged)" in out.decode()
    assert (await table(db))[7] == ("new", 7)


# --- a whole snapshot: delete_missing ---------------------------------------------------------

SNAPSHOT_KEYS = 1_000_000


def snapshot_csv(ids: range) -> bytes:
    """Keys in ``ids``: those with id % 200 == 0 left out (deleted), id % 100 == 1 changed;
    plus 5,000 new keys after SNAPSHOT_KEYS (the last chunk's)."""
    return "".join(f"{i},{'changed' if i % 100 == 1 else 'k'},{i % 7}\n"
                   for i in ids if i % 200 != 0).encode()


async def test_a_snapshot_of_a_million_rows_brings_the_table_up_to_date(stub, db):
    await db.execute("INSERT INTO events (id, kind, score) "
                     f"SELECT g, 'k', g % 7 FROM generate_series(0, {SNAPSHOT_KEYS - 1}) g")
    call, _ = await open_stream(stub, header(
        table="events", columns=["id", "kind", "score"], encoding="ENCODING_CSV",
        onConflict={"action": "ACTION_UPDATE"}, deleteMissing=True))
    step = 50_000
    parts = [range(start, start + step) for start in range(0, SNAPSHOT_KEYS, step)]
    parts.append(range(SNAPSHOT_KEYS, SNAPSHOT_KEYS + 5_000))

    async def sender() -> None:
        for sequence, ids in enumerate(parts, 1):
            await call.write(Req(chunk=batch_pb2.StreamChunk(sequence=sequence,
                                                             csv=snapshot_csv(ids))))
        await call.write(COMMIT)
    sending = asyncio.create_task(sender())
    while (response := await call.read()).WhichOneof("kind") != "summary":
        assert response.WhichOneof("kind") in ("opened", "ack"), response
    await sending
    summary = response.summary
    sent = sum(1 for ids in parts for i in ids if i % 200 != 0)
    new = sum(1 for i in parts[-1] if i % 200 != 0)
    changed = sum(1 for i in range(SNAPSHOT_KEYS) if i % 100 == 1)
    deleted = SNAPSHOT_KEYS // 200
    assert summary.committed
    assert (summary.rows_inserted, summary.rows_updated, summary.rows_unchanged,
            summary.rows_deleted) == (new, changed, sent - new - changed, deleted)
    assert await db.fetchval("SELECT count(*) FROM events") == SNAPSHOT_KEYS - deleted + new
    assert await db.fetchval("SELECT count(*) FROM events WHERE id % 200 = 0") == 0
    assert await db.fetchval("SELECT kind FROM events WHERE id = 101") == "changed"


async def test_delete_missing_deletes_only_within_its_slice(stub, db):
    await seed(db)  # ids 0..9; score = id
    call, _ = await open_stream(stub, header(
        table="events", columns=["id", "kind", "score"], encoding="ENCODING_CSV",
        onConflict={"action": "ACTION_DO_NOTHING"}, deleteMissing=True,
        deleteWhere=[{"column": "score", "op": "OPERATOR_LT", "value": 5}]))
    await call.write(Req(chunk=batch_pb2.StreamChunk(sequence=1, csv=b"1,x,1\n3,x,3\n7,x,7\n")))
    await call.write(COMMIT)
    assert (await call.read()).ack.rows_unchanged == 3
    summary = (await call.read()).summary
    assert summary.committed and summary.rows_deleted == 3  # 0, 2, 4
    assert sorted((await table(db)).keys()) == [1, 3, 5, 6, 7, 8, 9]


@pytest.mark.parametrize(("fields", "field"), [
    ({"mode": "MODE_INDEPENDENT", "onConflict": {"action": "ACTION_UPDATE"},
      "deleteMissing": True}, "header.delete_missing"),
    ({"deleteMissing": True}, "header.delete_missing"),  # an append
    ({"onConflict": {"action": "ACTION_UPDATE"},
      "deleteWhere": [{"column": "score", "op": "OPERATOR_EQ", "value": 1}]},
     "header.delete_where"),
    ({"onConflict": {"action": "ACTION_UPDATE"}, "deleteMissing": True,
      "deleteWhere": [{"column": "nope", "op": "OPERATOR_EQ", "value": 1}]},
     "header.delete_where[0].column"),
])
async def test_delete_missing_is_refused_where_it_cannot_apply(stub, db, fields, field):
    call = stub.BatchStream()
    await call.write(header(table="events", columns=["id", "kind", "score"],
                            encoding="ENCODING_CSV", **fields))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()


async def test_an_empty_snapshot_deletes_nothing(stub, db):
    await seed(db)
    call, _ = await open_stream(stub, header(
        table="events", columns=["id", "kind", "score"], encoding="ENCODING_CSV",
        onConflict={"action": "ACTION_UPDATE"}, deleteMissing=True))
    await call.write(COMMIT)
    code, _ = await ended_with(call)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert len(await table(db)) == len(BEFORE)
    await no_open_transaction(db)


async def test_the_client_and_the_cli_load_a_whole_snapshot(app, db, tmp_path):
    await seed(db)  # ids 0..9; the snapshot brings 5..14: 0..4 go
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        result = await client.ingest(
            "events", [{"id": i, "kind": k, "score": s} for i, k, s in CHUNK_1],
            on_conflict="update", delete_missing=True, mode="atomic")
    assert result.committed and result.rows_deleted == 5
    assert sorted((await table(db)).keys()) == list(range(5, 15))

    await db.execute("INSERT INTO events VALUES (1, 'back', 1)")
    snapshot = tmp_path / "whole.csv"
    snapshot.write_text("id,kind,score\n" + "".join(f"{i},{k},{s}\n" for i, k, s in CHUNK_2))
    proc = await asyncio.create_subprocess_exec(
        str(BATCHD), "ingest", str(snapshot), "--table", "events", "--upsert", "id",
        "--delete-missing", "--mode", "atomic", "--target", f"127.0.0.1:{app.port}",
        "--quiet", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()
    assert "; 10 deleted)" in out.decode()  # 1 and 5..13 were not in it
    assert await table(db) == {14: ("later", 1), 3: ("later", 1)}
