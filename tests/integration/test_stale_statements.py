"""A column's type changes under prepared statements: a catalog reload leaves no stale statement
behind, and a stale one met before the reload is prepared again and its transaction rerun,
never surfaced as the caller's INVALID_ARGUMENT. batchd runs as a login role that is neither
superuser nor owner (tests/support/roles.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.support.batches import batch, rows
from tests.support.roles import LOGIN, make_login_role, server_as_login_role

SETUP = f"""
DROP TABLE IF EXISTS stale_things;
CREATE TABLE stale_things (id integer PRIMARY KEY, label varchar(10));
INSERT INTO stale_things SELECT i, 'l' || i FROM generate_series(1, 5) AS i;
GRANT SELECT, INSERT ON stale_things TO {LOGIN};
"""
CONNECTIONS = 4
QUERY = {"id": "q", "query": {"table": "stale_things", "columns": ["id", "label"],
                              "order_by": [{"column": "id"}]}}


@pytest.fixture
async def stub(schema, db) -> AsyncIterator[batch_pb2_grpc.BatchServiceStub]:
    await make_login_role(db, [])
    await db.execute(SETUP)
    try:
        async with server_as_login_role(schema, [], demo_schema=False,
                                        pool_min_size=CONNECTIONS,
                                        pool_max_size=CONNECTIONS,
                                        expose=["public.stale_*"]) as stub:
            yield stub
    finally:
        await db.execute("DROP TABLE IF EXISTS stale_things")


async def on_every_connection(stub: batch_pb2_grpc.BatchServiceStub, mode: str,
                              ) -> list[batch_pb2.BatchExecuteResponse]:
    """The query, many at once: every pooled connection runs it (and prepares it)."""
    return list(await asyncio.gather(*(stub.BatchExecute(batch([QUERY], mode=mode))
                                       for _ in range(5 * CONNECTIONS))))


async def label_type(stub: batch_pb2_grpc.BatchServiceStub) -> str:
    schema = await stub.GetSchema(batch_pb2.GetSchemaRequest())
    table = next(t for t in schema.tables if t.name == "public.stale_things")
    return next(c.type for c in table.columns if c.name == "label")


@pytest.mark.parametrize("mode", ["MODE_ATOMIC", "MODE_INDEPENDENT"])
async def test_after_a_reload_no_statement_prepared_on_the_old_type_is_used(stub, db, mode):
    await on_every_connection(stub, mode)
    await db.execute("ALTER TABLE stale_things ALTER COLUMN label TYPE text")
    await db.execute("NOTIFY batchd, 'reload'")
    loop = asyncio.get_running_loop()
    ends = loop.time() + 30
    while await label_type(stub) != "text":
        assert loop.time() < ends, "the catalog never reloaded"
        await asyncio.sleep(0.05)
    for response in await on_every_connection(stub, mode):
        assert rows(response.results[0])[0] == {"id": 1, "label": "l1"}
        if mode == "MODE_ATOMIC":
            assert response.attempts == 1  # nothing stale met, nothing rerun


@pytest.mark.parametrize("mode", ["MODE_ATOMIC", "MODE_INDEPENDENT"])
async def test_a_stale_statement_met_before_the_reload_is_prepared_again(stub, db, mode):
    await on_every_connection(stub, mode)
    await db.execute("ALTER TABLE stale_things ALTER COLUMN label TYPE text")  # no reload
    responses = await on_every_connection(stub, mode)
    for response in responses:
        assert rows(response.results[0])[0] == {"id": 1, "label": "l1"}
        assert response.results[0].status.code == 0
    if mode == "MODE_ATOMIC":
        assert max(r.attempts for r in responses) == 2  # the one that met it ran again
