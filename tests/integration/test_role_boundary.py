"""Nothing cached under one role is used under another (tests/support/roles.py: batchd runs as
a login role that is neither superuser nor owner; tenants are roles of their own).

A prepared statement is shared by every role on a pooled connection. PostgreSQL's planner
inlines a plain SQL function once it has checked EXECUTE for the role that plans, so a plan
cached for batchd's login role would let a tenant call a function it has no EXECUTE on: in a
call, in a column default, inside a view, in a PL/pgSQL function's body, in a row-level-security
policy (PostgreSQL replans that one per role itself). Each path is pinned
here: the login role runs the statement until PostgreSQL caches a generic plan (more than five
times, on a pool of one connection, so that it is the same connection), then the tenant runs
the same statement and is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from batchd.v1 import batch_pb2_grpc
from tests.support.batches import batch, rows
from tests.support.roles import (
    LOGIN,
    bearer,
    drop_grants,
    make_login_role,
    server_as_login_role,
    token,
)

OWN, TENANT = "own-secret", "tenant-secret"
TENANTS = ["boundary_tenant"]
SETUP = f"""
DROP TABLE IF EXISTS boundary_items, boundary_stamped, boundary_rows CASCADE;
DROP FUNCTION IF EXISTS bnd_secret, bnd_stamp, bnd_visible, fn_bnd_double, fn_bnd_view,
    fn_bnd_plpgsql CASCADE;

-- Plain SQL functions (inlined by the planner) that only batchd's login role may run.
CREATE FUNCTION bnd_secret(a integer) RETURNS integer LANGUAGE sql AS 'SELECT a * 2';
CREATE FUNCTION bnd_stamp() RETURNS text LANGUAGE sql AS $$SELECT 'stamped'$$;
CREATE FUNCTION bnd_visible(owner text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
REVOKE EXECUTE ON FUNCTION bnd_secret(integer), bnd_stamp(), bnd_visible(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bnd_secret(integer), bnd_stamp(), bnd_visible(text) TO {LOGIN};

-- 1. A call: an exposed function that is itself guarded.
CREATE FUNCTION fn_bnd_double(a integer) RETURNS integer LANGUAGE sql AS 'SELECT a * 2';
REVOKE EXECUTE ON FUNCTION fn_bnd_double(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_bnd_double(integer) TO {LOGIN};

-- 2. A column default that calls a guarded function.
CREATE TABLE boundary_stamped (id bigserial PRIMARY KEY, note text,
                               stamp text DEFAULT bnd_stamp());
GRANT SELECT, INSERT ON boundary_stamped TO {LOGIN}, boundary_tenant;
GRANT USAGE ON SEQUENCE boundary_stamped_id_seq TO {LOGIN}, boundary_tenant;

-- 3. A view (security_invoker) that calls a guarded function, read through an exposed
--    function everybody may call.
CREATE TABLE boundary_items (id integer PRIMARY KEY, price integer);
INSERT INTO boundary_items VALUES (1, 10), (2, 20);
CREATE VIEW boundary_doubled WITH (security_invoker) AS
    SELECT id, bnd_secret(price) AS doubled FROM boundary_items;
GRANT SELECT ON boundary_items, boundary_doubled TO {LOGIN}, boundary_tenant;
CREATE FUNCTION fn_bnd_view() RETURNS SETOF integer LANGUAGE sql STABLE
    AS 'SELECT doubled FROM boundary_doubled ORDER BY id';
GRANT EXECUTE ON FUNCTION fn_bnd_view() TO {LOGIN}, boundary_tenant;

-- 4. A PL/pgSQL function everybody may call whose body calls a guarded one (PL/pgSQL keeps
--    its expressions' plans for the session).
CREATE FUNCTION fn_bnd_plpgsql(a integer) RETURNS integer LANGUAGE plpgsql
    AS 'BEGIN RETURN bnd_secret(a); END';
GRANT EXECUTE ON FUNCTION fn_bnd_plpgsql(integer) TO {LOGIN}, boundary_tenant;

-- 5. A row-level-security policy that calls a guarded function.
CREATE TABLE boundary_rows (id integer PRIMARY KEY, owner text);
INSERT INTO boundary_rows VALUES (1, 'x');
ALTER TABLE boundary_rows ENABLE ROW LEVEL SECURITY;
CREATE POLICY visible ON boundary_rows USING (bnd_visible(owner));
GRANT SELECT ON boundary_rows TO {LOGIN}, boundary_tenant;
"""
SCOPES = ["read:public.*", "write:public.*", "call:public.*"]


@pytest.fixture
async def stub(schema, db) -> AsyncIterator[batch_pb2_grpc.BatchServiceStub]:
    await make_login_role(db, TENANTS)
    await db.execute(SETUP)
    tokens = [token(OWN, "own", None, SCOPES), token(TENANT, "tenant", "boundary_tenant", SCOPES)]
    try:
        # One pooled connection: every statement below runs on the same one.
        async with server_as_login_role(schema, tokens, pool_min_size=1, pool_max_size=1,
                                        demo_schema=False,
                                        expose=["public.boundary_*"],
                                        expose_functions=["public.fn_bnd_*"]) as stub:
            yield stub
    finally:
        await db.execute("DROP TABLE IF EXISTS boundary_items, boundary_stamped, "
                         "boundary_rows CASCADE; DROP FUNCTION IF EXISTS bnd_secret, bnd_stamp, "
                         "bnd_visible, fn_bnd_double, fn_bnd_view, fn_bnd_plpgsql CASCADE")
        await drop_grants(db, [*TENANTS])


PATHS = {
    "call": {"id": "c", "call": {"function": "fn_bnd_double", "args": {"a": 21}}},
    "column default": {"id": "i", "insert": {"table": "boundary_stamped",
                                             "rows": [{"note": "n"}], "returning": ["stamp"]}},
    "view": {"id": "v", "call": {"function": "fn_bnd_view", "args": {}}},
    "plpgsql body": {"id": "p", "call": {"function": "fn_bnd_plpgsql", "args": {"a": 2}}},
    "policy": {"id": "q", "query": {"table": "boundary_rows", "columns": ["id"]}},
}


@pytest.mark.parametrize("mode", ["MODE_ATOMIC", "MODE_INDEPENDENT"])
@pytest.mark.parametrize("path", sorted(PATHS))
async def test_a_plan_cached_for_the_login_role_does_not_let_a_tenant_run_a_function_it_may_not(
        stub, path, mode):
    request = batch([PATHS[path]], mode=mode)
    for _ in range(8):  # past PostgreSQL's five custom plans: a generic one is cached
        response = await stub.BatchExecute(request, metadata=bearer(OWN))
        assert rows(response.results[0]), "the login role may run it"
    for _ in range(3):
        if mode == "MODE_ATOMIC":
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.BatchExecute(request, metadata=bearer(TENANT))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "permission denied for function" in caught.value.details()
        else:
            response = await stub.BatchExecute(request, metadata=bearer(TENANT))
            status = response.results[0].status
            assert status.code == grpc.StatusCode.PERMISSION_DENIED.value[0], status.message
            assert "permission denied for function" in status.message


async def test_a_tenant_granted_execute_then_revoked_through_a_role_is_refused_at_once(
        stub, db):
    """A plan cached *for the tenant* outlives a REVOKE of the membership that gave it
    EXECUTE (PostgreSQL does not invalidate plans on membership changes): none is cached."""
    await db.execute("DROP ROLE IF EXISTS boundary_callers; CREATE ROLE boundary_callers; "
                     "GRANT EXECUTE ON FUNCTION fn_bnd_double(integer) TO boundary_callers; "
                     "GRANT boundary_callers TO boundary_tenant")
    try:
        request = batch([PATHS["call"]])
        for _ in range(8):
            await stub.BatchExecute(request, metadata=bearer(TENANT))
        await db.execute("REVOKE boundary_callers FROM boundary_tenant")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.BatchExecute(request, metadata=bearer(TENANT))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await db.execute("DROP OWNED BY boundary_callers; DROP ROLE boundary_callers")
