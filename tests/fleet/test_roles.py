"""Principals mapped to database roles, behind pgbouncer in transaction mode: SET LOCAL ROLE
lives and dies with each transaction, so GRANTs and row-level security apply to every batch
and stream of a tenant, and no role is left behind on a server connection that pgbouncer then
hands to another client (another tenant, batchd's own bookkeeping, or anyone else)."""

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
from tests.support.roles import bearer
from tests.support.streams import COMMIT, INDEPENDENT, header, open_stream, rows_chunk, send
from tests.support.tenants import QUERY, SETUP, note

pytestmark = pytest.mark.fleet

A, B, ADMIN = "fleet-tenant-a", "fleet-tenant-b", "fleet-admin"
# A table that only GRANTs guard: tenant_b may insert, tenant_a may not (streams into a table
# with row-level security: tests/fleet/test_role_boundary.py).
STREAM_SETUP = """
DROP TABLE IF EXISTS tenant_log;
CREATE TABLE tenant_log (id bigserial PRIMARY KEY, tenant text NOT NULL DEFAULT current_user,
                         note text);
GRANT INSERT ON tenant_log TO tenant_b;
GRANT USAGE ON SEQUENCE tenant_log_id_seq TO tenant_b;
"""


# The query after the insert (INDEPENDENT runs operations without a dependency concurrently).
AFTER = {**QUERY, "depends_on": ["n"]}


@pytest.fixture
async def tenant_replica(fleet: Fleet, fleet_db: asyncpg.Connection) -> AsyncIterator[Replica]:
    """A fourth replica (not behind HAProxy) with one token per tenant, each mapped to its
    role, and an admin token without a role; the RLS table made before it reads the catalog."""
    # The login role is named batchd, like the bookkeeping schema, which "$user" in the
    # default search_path would otherwise put the tables in.
    await fleet_db.execute("SET search_path = public")
    await fleet_db.execute(SETUP + STREAM_SETUP)
    tokens = [{"sha256": hash_token(token), "principal": name, "role": role,
               "scopes": ["read:public.*", "write:public.*"]}
              for token, name, role in ((A, "a", "tenant_a"), (B, "b", "tenant_b"),
                                        (ADMIN, "admin", None))]
    env = {"BATCHD_DSN": fleet.pooled_dsn, **REPLICA_ENV, "BATCHD_TOKENS": json.dumps(tokens)}
    member = replica(fleet.workdir, 4, env, GRACE_SECONDS)
    await member.start()
    try:
        await member.wait_serving()
        yield member
    finally:
        await member.proc.stop()
        await fleet_db.execute("DROP TABLE IF EXISTS tenant_notes, tenant_log")


@pytest.mark.parametrize("mode", ["MODE_ATOMIC", "MODE_INDEPENDENT"])
async def test_tenants_see_and_write_only_their_rows_through_pgbouncer(
        tenant_replica: Replica, fleet: Fleet, fleet_db: asyncpg.Connection, mode: str) -> None:
    async with grpc.aio.insecure_channel(tenant_replica.address) as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        # Interleaved, many times: pgbouncer hands the same few server connections to both
        # tenants in turn; a role left on one would show as the other tenant's rows.
        for round_ in range(20):
            for token, tenant in ((A, "tenant_a"), (B, "tenant_b")):
                response = await stub.BatchExecute(batch([note(f"{tenant} {round_}"), AFTER],
                                                         mode=mode), metadata=bearer(token))
                assert rows(response.results[0]) == [{"tenant": tenant}]
                assert {r["tenant"] for r in rows(response.results[1])} == {tenant}
        # A write outside the policy is refused, naming the operation, and nothing of it stays.
        forged = batch([note("forged", tenant="tenant_b")], mode=mode)
        if mode == "MODE_ATOMIC":
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.BatchExecute(forged, metadata=bearer(A))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert 'operation "n"' in caught.value.details()
        else:
            result = (await stub.BatchExecute(forged, metadata=bearer(A))).results[0]
            assert result.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
            assert 'operation "n"' in result.status.message
        # The principal without a role runs as batchd's login role: the table's owner, whom
        # the policy does not restrict, so it sees every row: no tenant role stuck to it.
        response = await stub.BatchExecute(batch([QUERY], mode=mode), metadata=bearer(ADMIN))
        assert len(rows(response.results[0])) == 40
    assert await fleet_db.fetchval("SELECT count(*) FROM tenant_notes") == 40
    assert await fleet_db.fetchval(
        "SELECT count(*) FROM tenant_notes WHERE note LIKE tenant || ' %'") == 40
    # Whoever pgbouncer serves next gets batchd's login role on every server connection.
    pooled = await asyncpg.connect(fleet.pooled_dsn, statement_cache_size=0)
    try:
        for _ in range(10):
            assert await pooled.fetchval("SELECT current_user") == \
                await fleet_db.fetchval("SELECT current_user")
    finally:
        await pooled.close()


@pytest.mark.parametrize("mode", [{}, INDEPENDENT], ids=["atomic", "independent"])
async def test_a_tenant_stream_writes_as_its_role_through_pgbouncer(
        tenant_replica: Replica, fleet_db: asyncpg.Connection, mode: dict[str, str]) -> None:
    async with grpc.aio.insecure_channel(tenant_replica.address) as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        call, _ = await open_stream(stub, header(table="tenant_log", **mode), metadata=bearer(B))
        for sequence in (1, 2):
            chunk = rows_chunk(sequence, [{"note": f"s{sequence}-{i}"} for i in range(50)])
            assert (await send(call, chunk)).ack.rows_written == 50
        if mode:
            await call.done_writing()
            summary = (await call.read()).summary
        else:
            summary = (await send(call, COMMIT)).summary
        assert summary.committed and summary.rows_written == 100
        # tenant_a has no INSERT grant on the table: the stream is refused before its first
        # chunk, in both modes, naming the table and the privilege (a missing privilege is no
        # row's fault: tests/fleet/test_role_boundary.py has the ledger's side).
        call, _ = await open_stream(stub, header(table="tenant_log", **mode), metadata=bearer(A))
        await call.write(rows_chunk(1, [{"note": "not allowed"}, {"note": "nor this"}]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert 'may not INSERT into table "public.tenant_log"' in caught.value.details()
    # The column default is current_user: each row was written as tenant_b.
    assert [tuple(r) for r in await fleet_db.fetch(
        "SELECT tenant, count(*) FROM tenant_log GROUP BY 1")] == [("tenant_b", 100)]
