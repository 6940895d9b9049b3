"""The role boundary behind pgbouncer in transaction mode, with batchd logged in as a role that
is neither superuser nor owner (tests/support/roles.py): a server connection serves many batchd
connections and every role in turn, so a plan cached on it for one role must never run for
another (batchd.db.pool.role_sql), and a refused stream leaves nothing in the ledger."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from batchd.principals import hash_token
from batchd.v1 import batch_pb2_grpc
from tests.fleet.conftest import GRACE_SECONDS, REPLICA_ENV
from tests.fleet.processes import Fleet, Replica, replica
from tests.support.batches import batch, rows
from tests.support.roles import LOGIN, PASSWORD, bearer, make_login_role
from tests.support.streams import header, open_stream, rows_chunk, send

pytestmark = pytest.mark.fleet

OWN, TENANT = "boundary-own", "boundary-tenant"
SETUP = f"""
SET search_path = public;
DROP TABLE IF EXISTS fleet_plain, fleet_notes;
DROP FUNCTION IF EXISTS fn_fleet_double;
CREATE FUNCTION fn_fleet_double(a integer) RETURNS integer LANGUAGE sql AS 'SELECT a * 2';
REVOKE EXECUTE ON FUNCTION fn_fleet_double(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_fleet_double(integer) TO {LOGIN};
CREATE TABLE fleet_plain (id bigint PRIMARY KEY, note text);
GRANT SELECT, INSERT ON fleet_plain TO {LOGIN};
CREATE TABLE fleet_notes (id bigint PRIMARY KEY, tenant text NOT NULL DEFAULT current_user,
                          note text);
ALTER TABLE fleet_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON fleet_notes USING (tenant = current_user)
    WITH CHECK (tenant = current_user);
GRANT SELECT, INSERT ON fleet_notes TO {LOGIN}, tenant_a;
"""


@pytest.fixture
async def admin(fleet: Fleet) -> AsyncIterator[asyncpg.Connection]:
    """The superuser, in the fleet's database: the objects below are nobody's of batchd's."""
    conn = await asyncpg.connect(fleet.postgres.admin_dsn.replace("/postgres?", "/batchd?"))
    yield conn
    await conn.close()


@pytest.fixture
async def login_replica(fleet: Fleet, admin: asyncpg.Connection) -> AsyncIterator[Replica]:
    """A replica through pgbouncer as the login role that owns nothing, a token without a
    role and one mapped to tenant_a."""
    await make_login_role(admin, ["tenant_a"])
    await admin.execute(SETUP)
    tokens = [{"sha256": hash_token(secret), "principal": name, "role": role,
               "scopes": ["read:public.*", "write:public.*", "call:public.*"]}
              for secret, name, role in ((OWN, "own", None), (TENANT, "tenant", "tenant_a"))]
    pooled = fleet.pooled_dsn.replace("batchd:batchd@", f"{LOGIN}:{PASSWORD}@")
    env = {"BATCHD_DSN": pooled, **REPLICA_ENV, "BATCHD_TOKENS": json.dumps(tokens),
           "BATCHD_EXPOSE": '["public.fleet_*"]', "BATCHD_EXPOSE_FUNCTIONS": '["public.fn_*"]'}
    member = replica(fleet.workdir, 5, env, GRACE_SECONDS)
    await member.start()
    try:
        await member.wait_serving()
        yield member
    finally:
        await member.proc.stop()
        await admin.execute("DROP TABLE IF EXISTS fleet_plain, fleet_notes; "
                            "DROP FUNCTION IF EXISTS fn_fleet_double")


async def test_a_tenant_never_runs_a_plan_the_login_role_cached_through_pgbouncer(
        login_replica: Replica) -> None:
    call = batch([{"id": "c", "call": {"function": "fn_fleet_double", "args": {"a": 4}}}])
    async with grpc.aio.insecure_channel(login_replica.address) as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        for _ in range(10):  # interleaved over pgbouncer's few server connections
            for _ in range(7):
                response = await stub.BatchExecute(call, metadata=bearer(OWN))
                assert rows(response.results[0]) == [{"fn_fleet_double": 8}]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.BatchExecute(call, metadata=bearer(TENANT))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_refused_stream_records_nothing_and_writes_its_chunk_after_the_grant(
        login_replica: Replica, admin: asyncpg.Connection) -> None:
    first = header(table="fleet_plain", mode="MODE_INDEPENDENT", stream_id="fleet-refused")
    chunk = rows_chunk(1, [{"id": str(i), "note": "n"} for i in range(10)])
    async with grpc.aio.insecure_channel(login_replica.address) as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        call, _ = await open_stream(stub, first, metadata=bearer(TENANT))
        await call.write(chunk)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert 'role "tenant_a" may not INSERT into table "public.fleet_plain"' in \
            caught.value.details()
        assert await admin.fetchval("SELECT count(*) FROM batchd.stream_chunks "
                                    "WHERE stream_id = 'fleet-refused'") == 0
        await admin.execute("GRANT INSERT ON fleet_plain TO tenant_a")
        call, opened = await open_stream(stub, first, metadata=bearer(TENANT))
        assert opened.last_committed_sequence == 0
        ack = (await send(call, chunk)).ack
        assert (ack.rows_written, ack.duplicate) == (10, False)
    assert await admin.fetchval("SELECT count(*) FROM fleet_plain") == 10


async def test_a_stream_into_a_table_under_row_level_security_through_pgbouncer(
        login_replica: Replica, admin: asyncpg.Connection) -> None:
    async with grpc.aio.insecure_channel(login_replica.address) as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        call, _ = await open_stream(stub, header(table="fleet_notes", mode="MODE_INDEPENDENT",
                                                 columns=["id", "tenant", "note"]),
                                    metadata=bearer(TENANT))
        for sequence in range(1, 6):
            chunk = [{"id": str(100 * sequence + i), "tenant": "tenant_a", "note": "n"}
                     for i in range(20)]
            chunk[5]["tenant"] = "tenant_b"  # the policy refuses it
            ack = (await send(call, rows_chunk(sequence, chunk))).ack
            assert ack.rows_written == 19 and [r.chunk_index for r in ack.rejected] == [5]
    assert await admin.fetchval("SELECT count(*) FROM fleet_notes WHERE tenant = 'tenant_a'") \
        == 95
