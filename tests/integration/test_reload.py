"""The catalog reloads after DDL without a restart: on NOTIFY batchd, 'reload', on SIGHUP,
and from the optional event trigger; calls planned before finish on their catalog."""

from __future__ import annotations

import asyncio
import signal
import uuid

import grpc
import pytest

from batchd.app import App
from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.support.batches import batch
from tests.support.servers import make_settings, serving


async def tables_of(stub: batch_pb2_grpc.BatchServiceStub) -> set[str]:
    return {t.name for t in (await stub.GetSchema(batch_pb2.GetSchemaRequest())).tables}


async def until_listed(stub: batch_pb2_grpc.BatchServiceStub, name: str,
                       patience: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    ends = loop.time() + patience
    while loop.time() < ends:
        if name in await tables_of(stub):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never appeared in GetSchema")


@pytest.fixture
async def new_table(db):
    name = f"reload_{uuid.uuid4().hex[:8]}"
    yield name
    await db.execute(f'DROP TABLE IF EXISTS "{name}"')


async def test_notify_reload_exposes_a_new_table_at_once(schema, db, new_table):
    app = await App.start(make_settings(schema))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            await db.execute(f'CREATE TABLE "{new_table}" (id bigint PRIMARY KEY, note text)')
            assert f"public.{new_table}" not in await tables_of(stub)  # not before a reload
            await db.execute("NOTIFY batchd, 'reload'")
            await until_listed(stub, f"public.{new_table}")
            response = await stub.BatchExecute(batch([{"id": "n", "insert": {
                "table": new_table, "rows": [{"id": 1, "note": "live"}]}}]))
            assert response.committed
    finally:
        await app.stop(grace=1)
    assert await db.fetchval(f'SELECT note FROM "{new_table}"') == "live"


async def test_a_batch_planned_before_a_reload_finishes_on_its_catalog(schema, db, new_table):
    app = await App.start(make_settings(schema))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            await db.execute("SELECT pg_advisory_lock(424242)")
            try:
                in_flight = asyncio.ensure_future(stub.BatchExecute(batch([
                    {"id": "w", "call": {"handler": "wait_for_lock", "args": {"key": 424242}}},
                    {"id": "c", "insert": {"table": "customers",
                                           "rows": [{"name": "r", "email": "r@x"}]}}])))
                for _ in range(400):
                    if await db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = "
                                         "'advisory' AND objid = 424242 AND NOT granted"):
                        break
                    await asyncio.sleep(0.05)
                await db.execute(f'CREATE TABLE "{new_table}" (id bigint PRIMARY KEY)')
                before = app.catalog_reload.reloads
                await app.catalog_reload.reload()
                assert app.catalog_reload.reloads == before + 1
            finally:
                await db.execute("SELECT pg_advisory_unlock(424242)")
            assert (await in_flight).committed
            assert f"public.{new_table}" in await tables_of(stub)
    finally:
        await app.stop(grace=1)


async def test_sighup_reloads_the_catalog_of_a_running_server(schema, db, new_table):
    async with serving(schema, grace=5) as (proc, channel):
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        await db.execute(f'CREATE TABLE "{new_table}" (id bigint PRIMARY KEY)')
        proc.send_signal(signal.SIGHUP)
        await until_listed(stub, f"public.{new_table}")


async def test_the_event_trigger_reloads_after_ddl(schema, db, new_table):
    app = await App.start(make_settings(schema, reload_trigger=True))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            await db.execute(f'CREATE TABLE "{new_table}" (id bigint PRIMARY KEY)')
            await until_listed(stub, f"public.{new_table}")
    finally:
        await app.stop(grace=1)
        await db.execute("DROP EVENT TRIGGER IF EXISTS batchd_reload")
