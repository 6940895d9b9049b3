"""GetSchema for a principal mapped to a database role shows what the role may use, as
PostgreSQL's privileges say (batchd.grants): not the tables it has no privilege on, only the
columns it has some privilege on, only the operations it can run, only the functions it may
execute. batchd runs as a login role that is neither superuser nor owner of these tables
(tests/support/roles.py); a principal without a role sees the whole catalog its scopes
cover."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from batchd.app import App
from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.support.roles import (
    LOGIN,
    PASSWORD,
    bearer,
    drop_grants,
    dsn_as,
    make_login_role,
    token,
)
from tests.support.servers import make_settings

OWN, TENANT = "schema-own-secret", "schema-tenant-secret"
TENANTS = ["schema_tenant"]
SCOPES = ["read:public.*", "write:public.*", "call:public.*"]
SETUP = f"""
DROP TABLE IF EXISTS sch_notes, sch_hidden, sch_staff CASCADE;
DROP FUNCTION IF EXISTS fn_sch_allowed, fn_sch_denied CASCADE;
CREATE TABLE sch_notes (id bigserial PRIMARY KEY, note text);
CREATE TABLE sch_hidden (id bigserial PRIMARY KEY, secret text);
CREATE TABLE sch_staff (id bigserial PRIMARY KEY, name text, salary numeric);
GRANT SELECT, INSERT, UPDATE, DELETE ON sch_notes, sch_hidden, sch_staff TO {LOGIN};
CREATE FUNCTION fn_sch_allowed(a integer) RETURNS integer LANGUAGE sql AS 'SELECT a';
CREATE FUNCTION fn_sch_denied(a integer) RETURNS integer LANGUAGE sql AS 'SELECT a';
REVOKE EXECUTE ON FUNCTION fn_sch_allowed(integer), fn_sch_denied(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_sch_allowed(integer), fn_sch_denied(integer) TO {LOGIN};

-- The tenant: reads notes (no INSERT, UPDATE, DELETE); of the staff, reads id and name and
-- may update name (not the salary); nothing of sch_hidden; executes only fn_sch_allowed.
GRANT SELECT ON sch_notes TO schema_tenant;
GRANT SELECT (id, name), UPDATE (name) ON sch_staff TO schema_tenant;
GRANT EXECUTE ON FUNCTION fn_sch_allowed(integer) TO schema_tenant;
"""


@pytest.fixture
async def served(schema: str, db: asyncpg.Connection,
                 ) -> AsyncIterator[tuple[App, batch_pb2_grpc.BatchServiceStub]]:
    await make_login_role(db, TENANTS)
    await db.execute(SETUP)
    tokens = [token(OWN, "own", None, SCOPES), token(TENANT, "tenant", "schema_tenant", SCOPES)]
    app = await App.start(make_settings(dsn_as(schema, LOGIN, PASSWORD), tokens=tokens,
                                        demo_schema=False, expose=["public.sch_*"],
                                        expose_functions=["public.fn_sch_*"]))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield app, batch_pb2_grpc.BatchServiceStub(channel)
    finally:
        await app.stop(grace=1)
        await db.execute("DROP TABLE IF EXISTS sch_notes, sch_hidden, sch_staff CASCADE; "
                         "DROP FUNCTION IF EXISTS fn_sch_allowed, fn_sch_denied CASCADE")
        await drop_grants(db, TENANTS)


async def schema_of(stub: batch_pb2_grpc.BatchServiceStub,
                    secret: str) -> batch_pb2.GetSchemaResponse:
    return await stub.GetSchema(batch_pb2.GetSchemaRequest(), metadata=bearer(secret))


def tables(response: batch_pb2.GetSchemaResponse) -> dict[str, tuple[list[str], list[str]]]:
    """Each table's columns and operations, by name."""
    return {t.name: ([c.name for c in t.columns], list(t.operations)) for t in response.tables}


def functions(response: batch_pb2.GetSchemaResponse) -> list[str]:
    return [f.name for f in response.functions]


async def test_a_role_sees_only_tables_columns_and_operations_it_has_privileges_for(served):
    _, stub = served
    shown = tables(await schema_of(stub, TENANT))
    assert "public.sch_hidden" not in shown  # no privilege: not even its name
    assert shown == {
        "public.sch_notes": (["id", "note"], ["get", "query"]),  # SELECT only: no insert
        "public.sch_staff": (["id", "name"], ["get", "query", "update"]),  # no salary
    }


async def test_a_role_sees_only_the_functions_it_may_execute(served):
    _, stub = served
    assert functions(await schema_of(stub, TENANT)) == ["public.fn_sch_allowed"]


async def test_a_principal_without_a_role_sees_every_table_and_function_its_scopes_cover(
        served):
    _, stub = served
    response = await schema_of(stub, OWN)
    assert tables(response)["public.sch_staff"] == (
        ["id", "name", "salary"], ["delete", "get", "insert", "query", "update"])
    assert set(tables(response)) == {"public.sch_notes", "public.sch_hidden", "public.sch_staff"}
    assert functions(response) == ["public.fn_sch_allowed", "public.fn_sch_denied"]


async def test_a_grant_shows_after_the_catalog_reloads(served, db):
    app, stub = served
    assert "public.sch_hidden" not in tables(await schema_of(stub, TENANT))
    await db.execute("GRANT SELECT, INSERT ON sch_hidden TO schema_tenant; "
                     "GRANT EXECUTE ON FUNCTION fn_sch_denied(integer) TO schema_tenant")
    # Privileges are read once per catalog: until it reloads, the schema is as it was.
    assert "public.sch_hidden" not in tables(await schema_of(stub, TENANT))
    assert app.catalog_reload is not None
    reloads = app.catalog_reload.reloads
    await db.execute("NOTIFY batchd, 'reload'")
    for _ in range(400):
        if app.catalog_reload.reloads > reloads:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the catalog never reloaded")
    response = await schema_of(stub, TENANT)
    assert tables(response)["public.sch_hidden"] == (["id", "secret"],
                                                     ["get", "insert", "query"])
    assert functions(response) == ["public.fn_sch_allowed", "public.fn_sch_denied"]
