"""A stream's role and its table: a missing privilege refuses the stream and burns nothing;
a table under row-level security takes streams through a staging table, its policies applied
row by row (batchd.stream.access). batchd runs as a login role that is neither superuser nor
owner (tests/support/roles.py); the tenants are roles of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pyarrow as pa
import pytest

from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.support.batches import BatchFailure
from tests.support.roles import (
    LOGIN,
    bearer,
    drop_grants,
    make_login_role,
    server_as_login_role,
    token,
)
from tests.support.streams import COMMIT, Req, arrow_chunk, header, open_stream, rows_chunk, send

A, B = "priv-tenant-a", "priv-tenant-b"
TENANTS = ["priv_a", "priv_b"]
SETUP = f"""
DROP TABLE IF EXISTS priv_plain, priv_notes;
CREATE TABLE priv_plain (id bigint PRIMARY KEY, note text, secret text);
GRANT SELECT, INSERT ON priv_plain TO {LOGIN};
-- priv_b may insert only (id, note).
GRANT INSERT (id, note) ON priv_plain TO priv_b;

CREATE TABLE priv_notes (id bigint PRIMARY KEY,
                         tenant text NOT NULL DEFAULT current_user, note text);
ALTER TABLE priv_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON priv_notes USING (tenant = current_user)
    WITH CHECK (tenant = current_user);
GRANT SELECT, INSERT ON priv_notes TO {LOGIN}, priv_a, priv_b;
"""
SCOPES = ["read:public.*", "write:public.*"]


@pytest.fixture
async def stub(schema, db) -> AsyncIterator[batch_pb2_grpc.BatchServiceStub]:
    await make_login_role(db, TENANTS)
    await db.execute(SETUP)
    # Stream ids are reused by the tests here: each starts with none of them known.
    await db.execute("DELETE FROM batchd.streams WHERE stream_id LIKE 's-priv%' "
                     "OR stream_id LIKE 'rls-%'")
    tokens = [token(A, "a", "priv_a", SCOPES), token(B, "b", "priv_b", SCOPES)]
    try:
        async with server_as_login_role(schema, tokens, demo_schema=False,
                                        expose=["public.priv_*"]) as stub:
            yield stub
    finally:
        await db.execute("DROP TABLE IF EXISTS priv_plain, priv_notes")
        await drop_grants(db, TENANTS)


def independent(table: str, columns: list[str] | None = None, **fields: Any) -> Req:
    fields.setdefault("stream_id", f"s-{table}")
    return header(table=table, mode="MODE_INDEPENDENT",
                  **({"columns": columns} if columns else {}), **fields)


async def refused(call: Any, request: Req) -> BatchFailure:
    await call.write(request)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    return BatchFailure(caught.value)


NOTES = [{"id": str(i), "note": f"n{i}"} for i in range(1, 6)]


# --- a missing privilege ---------------------------------------------------------------------

async def test_an_independent_stream_without_insert_is_refused_and_its_chunk_written_later(
        stub, db):
    call, _ = await open_stream(stub, independent("priv_plain"), metadata=bearer(A))
    failure = await refused(call, rows_chunk(1, NOTES))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert 'role "priv_a" may not INSERT into table "public.priv_plain"' in failure.message
    assert failure.error_info["reason"] == "INSUFFICIENT_PRIVILEGE"
    assert failure.error_info["privilege"] == "INSERT"
    assert await db.fetchval("SELECT count(*) FROM batchd.stream_chunks "
                             "WHERE stream_id = 's-priv_plain'") == 0

    await db.execute("GRANT INSERT ON priv_plain TO priv_a")
    call, opened = await open_stream(stub, independent("priv_plain"), metadata=bearer(A))
    assert opened.last_committed_sequence == 0
    ack = (await send(call, rows_chunk(1, NOTES))).ack
    assert (ack.rows_written, ack.duplicate, list(ack.rejected)) == (5, False, [])
    assert await db.fetchval("SELECT count(*) FROM priv_plain") == 5


async def test_an_atomic_stream_without_insert_names_the_table_and_privilege_not_a_row(stub, db):
    call, _ = await open_stream(stub, header(table="priv_plain"), metadata=bearer(A))
    failure = await refused(call, rows_chunk(1, NOTES))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert failure.error_info["reason"] == "INSUFFICIENT_PRIVILEGE"
    assert "INSERT" in failure.message and "priv_plain" in failure.message
    assert "row 0" not in failure.message
    assert await db.fetchval("SELECT count(*) FROM priv_plain") == 0


async def test_a_column_the_role_may_not_insert_into_is_named(stub, db):
    call, _ = await open_stream(stub, independent("priv_plain", ["id", "secret"]),
                                metadata=bearer(B))
    failure = await refused(call, rows_chunk(1, [{"id": "1", "secret": "x"}]))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert 'may not INSERT into column secret of table "public.priv_plain"' in failure.message
    call, _ = await open_stream(stub, independent("priv_plain", ["id", "note"]),
                                metadata=bearer(B))
    assert (await send(call, rows_chunk(1, NOTES))).ack.rows_written == 5


async def test_insert_revoked_mid_stream_refuses_the_chunk_and_it_is_written_after_the_grant(
        stub, db):
    await db.execute("GRANT INSERT ON priv_plain TO priv_a")
    call, _ = await open_stream(stub, independent("priv_plain"), metadata=bearer(A))
    assert (await send(call, rows_chunk(1, NOTES[:2]))).ack.rows_written == 2
    await db.execute("REVOKE INSERT ON priv_plain FROM priv_a")
    failure = await refused(call, rows_chunk(2, NOTES[2:]))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert "chunk 2 was not written" in failure.message
    assert failure.error_info["sequence"] == "2"
    assert await db.fetchval("SELECT max(sequence) FROM batchd.stream_chunks "
                             "WHERE stream_id = 's-priv_plain'") == 1

    await db.execute("GRANT INSERT ON priv_plain TO priv_a")
    call, opened = await open_stream(stub, independent("priv_plain"), metadata=bearer(A))
    assert opened.last_committed_sequence == 1
    ack = (await send(call, rows_chunk(2, NOTES[2:]))).ack
    assert (ack.rows_written, ack.duplicate) == (3, False)
    assert await db.fetchval("SELECT count(*) FROM priv_plain") == 5


async def test_a_stream_id_is_its_principals_own(stub, db):
    await db.execute("GRANT INSERT ON priv_plain TO priv_a, priv_b")
    call, _ = await open_stream(stub, independent("priv_plain", ["id", "note"]),
                                metadata=bearer(A))
    assert (await send(call, rows_chunk(1, NOTES))).ack.rows_written == 5
    call = stub.BatchStream(metadata=bearer(B))
    failure = await refused(call, independent("priv_plain", ["id", "note"]))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.error_info["reason"] == "STREAM_ID_TAKEN"
    assert "n1" not in failure.message


# --- row-level security ----------------------------------------------------------------------

def notes_csv(sequence: int, rows: list[tuple[int, str]]) -> Req:
    data = "".join(f"{i},{note}\n" for i, note in rows).encode()
    return Req(chunk=batch_pb2.StreamChunk(sequence=sequence, csv=data))


def notes_columnar(sequence: int, rows: list[tuple[int, str]]) -> Req:
    return Req(chunk=batch_pb2.StreamChunk(sequence=sequence, columnar=batch_pb2.ColumnarRows(
        columns=[batch_pb2.ColumnValues(int64s=batch_pb2.Int64Array(values=[i for i, _ in rows])),
                 batch_pb2.ColumnValues(strings=batch_pb2.StringArray(
                     values=[n for _, n in rows]))])))


def notes_rows(sequence: int, rows: list[tuple[int, str]]) -> Req:
    return rows_chunk(sequence, [{"id": str(i), "note": n} for i, n in rows])


def notes_arrow(sequence: int, rows: list[tuple[int, str]]) -> Req:
    return arrow_chunk(sequence, pa.table({"id": pa.array([i for i, _ in rows], pa.int64()),
                                           "note": [n for _, n in rows]}))


ENCODINGS = {"ENCODING_ROWS": notes_rows, "ENCODING_COLUMNAR": notes_columnar,
             "ENCODING_CSV": notes_csv, "ENCODING_ARROW": notes_arrow}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
async def test_streams_into_a_table_under_row_level_security_apply_its_policies(
        stub, db, encoding):
    chunk = ENCODINGS[encoding]
    for secret, tenant, first in ((A, "priv_a", 1), (B, "priv_b", 1001)):
        call, _ = await open_stream(stub, independent("priv_notes", ["id", "note"],
                                                      encoding=encoding,
                                                      stream_id=f"rls-{tenant}"),
                                    metadata=bearer(secret))
        for sequence in (1, 2):
            rows = [(first + 100 * sequence + i, f"{tenant} {i}") for i in range(50)]
            ack = (await send(call, chunk(sequence, rows))).ack
            assert (ack.rows_written, list(ack.rejected)) == (50, [])
        again = (await send(call, chunk(2, rows))).ack
        assert again.duplicate and again.rows_written == 50
    counts = dict(await db.fetch("SELECT tenant, count(*) FROM priv_notes GROUP BY tenant"))
    assert counts == {"priv_a": 100, "priv_b": 100}  # each row stamped by its tenant's default


async def test_a_row_a_policy_refuses_is_rejected_and_the_others_written(stub, db):
    call, _ = await open_stream(stub, independent("priv_notes", ["id", "tenant", "note"]),
                                metadata=bearer(A))
    rows = [{"id": str(i), "tenant": "priv_a", "note": "ok"} for i in range(20)]
    rows[7]["tenant"] = rows[13]["tenant"] = "priv_b"  # forged
    ack = (await send(call, rows_chunk(1, rows))).ack
    assert ack.rows_written == 18
    assert [(r.index, r.status.code) for r in ack.rejected] == [
        (7, grpc.StatusCode.PERMISSION_DENIED.value[0]),
        (13, grpc.StatusCode.PERMISSION_DENIED.value[0])]
    assert "row-level security" in ack.rejected[0].status.message
    assert await db.fetchval("SELECT count(*) FROM priv_notes") == 18


async def test_a_bad_csv_record_in_a_staged_stream_is_named_by_its_line(stub, db):
    call, _ = await open_stream(stub, independent("priv_notes", ["id", "note"],
                                                  encoding="ENCODING_CSV"), metadata=bearer(A))
    data = b"1,a\n2,b\nthree,c\n4,d\n"
    ack = (await send(call, Req(chunk=batch_pb2.StreamChunk(sequence=1, csv=data)))).ack
    assert ack.rows_written == 3
    assert [r.index for r in ack.rejected] == [2]
    assert ack.rejected[0].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_an_atomic_stream_into_a_table_under_row_level_security(stub, db):
    call, _ = await open_stream(stub, header(table="priv_notes", columns=["id", "note"]),
                                metadata=bearer(A))
    for sequence in (1, 2, 3):
        rows = [(100 * sequence + i, "n") for i in range(10)]
        assert (await send(call, notes_rows(sequence, rows))).ack.rows_written == 10
    summary = (await send(call, COMMIT)).summary
    assert (summary.committed, summary.rows_written) == (True, 30)
    assert await db.fetchval("SELECT count(*) FROM priv_notes WHERE tenant = 'priv_a'") == 30

    call, _ = await open_stream(stub, header(table="priv_notes"), metadata=bearer(A))
    failure = await refused(call, rows_chunk(1, [{"id": "1000", "tenant": "priv_b"}]))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert failure.error_info["reason"] == "BAD_ROW"
    assert await db.fetchval("SELECT count(*) FROM priv_notes") == 30


async def test_a_role_that_may_not_make_a_temporary_table_is_told_what_to_grant(stub, db):
    database = await db.fetchval("SELECT current_database()")
    await db.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
    try:
        call, _ = await open_stream(stub, independent("priv_notes"), metadata=bearer(A))
        failure = await refused(call, rows_chunk(1, [{"id": "1", "note": "n"}]))
    finally:
        await db.execute(f'GRANT TEMPORARY ON DATABASE "{database}" TO PUBLIC')
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert f'GRANT TEMPORARY ON DATABASE "{database}" TO "priv_a"' in failure.message
    assert await db.fetchval("SELECT count(*) FROM priv_notes") == 0
