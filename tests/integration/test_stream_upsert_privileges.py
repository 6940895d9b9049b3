"""A merging stream's role: it must be allowed to read the key and update the columns its
on_conflict sets (refused before anything is written, naming the column and privilege); with
them, it merges, also into a table under row-level security, whose policies apply to the
merge (batchd.stream.access, batchd.stream.sink)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from batchd.v1 import batch_pb2_grpc
from tests.support.batches import BatchFailure
from tests.support.roles import (
    LOGIN,
    bearer,
    drop_grants,
    make_login_role,
    server_as_login_role,
    token,
)
from tests.support.streams import Req, header, open_stream, rows_chunk, send

A, B = "upriv-tenant-a", "upriv-tenant-b"
TENANTS = ["upriv_a", "upriv_b"]
SETUP = f"""
DROP TABLE IF EXISTS upriv_plain, upriv_notes;
CREATE TABLE upriv_plain (id bigint PRIMARY KEY, note text);
GRANT SELECT, INSERT, UPDATE ON upriv_plain TO {LOGIN};
INSERT INTO upriv_plain VALUES (1, 'before');
-- upriv_a may insert, read and update; upriv_b only insert.
GRANT SELECT, INSERT, UPDATE ON upriv_plain TO upriv_a;
GRANT INSERT ON upriv_plain TO upriv_b;

CREATE TABLE upriv_notes (id bigint PRIMARY KEY,
                          tenant text NOT NULL DEFAULT current_user, note text);
ALTER TABLE upriv_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON upriv_notes USING (tenant = current_user)
    WITH CHECK (tenant = current_user);
GRANT SELECT, INSERT, UPDATE ON upriv_notes TO {LOGIN}, upriv_a, upriv_b;
"""
SCOPES = ["read:public.*", "write:public.*"]


@pytest.fixture
async def stub(schema, db) -> AsyncIterator[batch_pb2_grpc.BatchServiceStub]:
    await make_login_role(db, TENANTS)
    await db.execute(SETUP)
    await db.execute("DELETE FROM batchd.streams WHERE stream_id LIKE 'upriv-%'")
    tokens = [token(A, "a", "upriv_a", SCOPES), token(B, "b", "upriv_b", SCOPES)]
    try:
        async with server_as_login_role(schema, tokens, demo_schema=False,
                                        expose=["public.upriv_*"]) as stub:
            yield stub
    finally:
        await db.execute("DROP TABLE IF EXISTS upriv_plain, upriv_notes")
        await drop_grants(db, TENANTS)


def merging(table: str, stream_id: str) -> Req:
    return header(table=table, columns=["id", "note"], mode="MODE_INDEPENDENT",
                  stream_id=stream_id, on_conflict={"action": "ACTION_UPDATE"})


NOTES = [{"id": "1", "note": "after"}, {"id": "2", "note": "new"}]


async def test_a_role_that_may_not_update_is_refused_naming_the_privilege(stub, db):
    call, _ = await open_stream(stub, merging("upriv_plain", "upriv-b"), metadata=bearer(B))
    await call.write(rows_chunk(1, NOTES))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    failure = BatchFailure(caught.value)
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert 'may not UPDATE column note of table "public.upriv_plain"' in failure.message
    assert failure.error_info["privilege"] == "UPDATE"
    assert await db.fetchval("SELECT note FROM upriv_plain WHERE id = 1") == "before"
    assert await db.fetchval("SELECT count(*) FROM batchd.stream_chunks "
                             "WHERE stream_id = 'upriv-b'") == 0


async def test_a_role_with_the_privileges_merges(stub, db):
    call, _ = await open_stream(stub, merging("upriv_plain", "upriv-a"), metadata=bearer(A))
    ack = (await send(call, rows_chunk(1, NOTES))).ack
    assert (ack.rows_inserted, ack.rows_updated, ack.rows_unchanged) == (1, 1, 0)
    assert {r["id"]: r["note"] for r in await db.fetch("SELECT * FROM upriv_plain")} == \
        {1: "after", 2: "new"}


async def test_under_row_level_security_a_merge_touches_only_the_roles_rows(stub, db):
    await db.execute("INSERT INTO upriv_notes VALUES (1, 'upriv_a', 'a1'), (2, 'upriv_b', 'b2')")
    call, _ = await open_stream(stub, merging("upriv_notes", "upriv-rls"), metadata=bearer(A))
    ack = (await send(call, rows_chunk(1, [{"id": "1", "note": "a1 again"}]))).ack
    assert (ack.rows_updated, list(ack.rejected)) == (1, [])
    # Key 2 is another tenant's row: the policy hides it, so the insert conflicts with a row
    # the merge may not update; PostgreSQL refuses it, and that row alone is rejected.
    ack = (await send(call, rows_chunk(2, [{"id": "2", "note": "stolen"},
                                           {"id": "3", "note": "a3"}]))).ack
    assert ack.rows_inserted == 1 and [r.chunk_index for r in ack.rejected] == [0]
    notes = {r["id"]: (r["tenant"], r["note"]) for r in await db.fetch("SELECT * FROM upriv_notes")}
    assert notes == {1: ("upriv_a", "a1 again"), 2: ("upriv_b", "b2"), 3: ("upriv_a", "a3")}




async def test_delete_missing_needs_the_delete_privilege(stub, db):
    call, _ = await open_stream(stub, header(
        table="upriv_plain", columns=["id", "note"], on_conflict={"action": "ACTION_UPDATE"},
        delete_missing=True), metadata=bearer(A))
    await call.write(rows_chunk(1, NOTES))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    failure = BatchFailure(caught.value)
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert failure.error_info["privilege"] == "DELETE"
    assert await db.fetchval("SELECT note FROM upriv_plain WHERE id = 1") == "before"
