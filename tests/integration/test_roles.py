"""A principal mapped to a database role runs as it (SET LOCAL ROLE in each transaction), so
PostgreSQL's GRANTs and row-level security apply: each tenant sees and writes only its rows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from batchd.app import App
from batchd.config import TokenSettings
from batchd.principals import hash_token
from batchd.startup import StartupError
from batchd.v1 import batch_pb2_grpc
from tests.support.batches import batch, rows
from tests.support.roles import bearer
from tests.support.servers import make_settings
from tests.support.tenants import QUERY, SETUP, note

A, B = "tenant-a-secret", "tenant-b-secret"


@pytest.fixture
async def stub(schema, db) -> AsyncIterator[batch_pb2_grpc.BatchServiceStub]:
    await db.execute(SETUP)
    tokens = [TokenSettings(sha256=hash_token(token), principal=name, role=role,
                            scopes=["read:public.*", "write:public.*"])
              for token, name, role in ((A, "a", "tenant_a"), (B, "b", "tenant_b"))]
    app = await App.start(make_settings(schema, tokens=tokens))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield batch_pb2_grpc.BatchServiceStub(channel)
    finally:
        await app.stop(grace=1)
        await db.execute("DROP TABLE IF EXISTS tenant_notes")




@pytest.mark.parametrize("mode", ["MODE_ATOMIC", "MODE_INDEPENDENT"])
async def test_each_tenant_sees_and_writes_only_its_rows(stub, db, mode):
    for token, text in ((A, "from a"), (B, "from b")):
        response = await stub.BatchExecute(batch([note(text)], mode=mode), metadata=bearer(token))
        assert rows(response.results[0]) == [{"tenant": f"tenant_{text[-1]}"}]
    for token, tenant in ((A, "tenant_a"), (B, "tenant_b")):
        response = await stub.BatchExecute(batch([QUERY], mode=mode), metadata=bearer(token))
        assert {r["tenant"] for r in rows(response.results[0])} == {tenant}
    assert await db.fetchval("SELECT count(*) FROM tenant_notes") == 2


async def test_a_write_outside_the_policy_is_permission_denied_naming_the_operation(stub, db):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchExecute(batch([note("forged", tenant="tenant_b")]), metadata=bearer(A))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert 'operation "n"' in caught.value.details()
    assert await db.fetchval("SELECT count(*) FROM tenant_notes") == 0


async def test_a_request_id_is_stored_by_batchd_while_the_operations_run_as_the_role(stub, db):
    request = batch([note("once")], request_id="roles-once")
    first = await stub.BatchExecute(request, metadata=bearer(A))
    again = await stub.BatchExecute(request, metadata=bearer(A))
    assert again.replayed and rows(again.results[0]) == rows(first.results[0])
    assert await db.fetchval("SELECT count(*) FROM tenant_notes") == 1


async def test_a_role_batchd_cannot_take_stops_the_start(schema):
    tokens = [TokenSettings(sha256=hash_token(A), principal="a", role="no_such_role_x",
                            scopes=["admin"])]
    with pytest.raises(StartupError, match="no_such_role_x: no such role"):
        await App.start(make_settings(schema, tokens=tokens))
