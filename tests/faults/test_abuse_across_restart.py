"""Abuse and a PostgreSQL restart at once. The default suite has the abuse alone (10,000 calls
in a burst, tests/integration/test_overload.py; 200 silent streams,
tests/integration/test_stream_admission.py); what the restart adds: waves of calls far beyond
the admission limit, many of them failing on the dead database, get only OK, RESOURCE_EXHAUSTED
or UNAVAILABLE; 500 silent streams held across the restart take nothing a well-behaved stream
needs; and afterwards no slot and no pooled connection is left behind (every slot runs a batch
inside PostgreSQL at once)."""

from __future__ import annotations

import asyncio
import collections

import asyncpg
import grpc
import pytest

from batchd.app import App
from batchd.v1 import batch_pb2_grpc
from tests.faults.conftest import until
from tests.support.batches import batch
from tests.support.locks import LOCK, blocked_batch, waiters
from tests.support.postgres import own_postgres, restart_postgres
from tests.support.servers import make_settings
from tests.support.streams import COMMIT, ended_with, events, header, open_stream, rows_chunk, send

pytestmark = pytest.mark.faults

SILENT = 500
WAVE = 300  # concurrent calls per wave
MAX_WAVES = 40
SLOTS = 8  # max_concurrent_batches = pool_max_size
HEADER_SECONDS = 8.0  # stream_header_seconds: silent streams are ended after this


@pytest.mark.timeout(120)
async def test_abuse_across_a_postgresql_restart_gets_clean_codes_and_leaves_nothing_behind():
    async with own_postgres() as (dsn, folder):
        setup = await asyncpg.connect(dsn)
        await setup.execute("CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, "
                            "score integer)")
        await setup.close()
        app = await App.start(make_settings(
            dsn, tables={}, max_concurrent_batches=SLOTS, pool_max_size=SLOTS,
            max_concurrent_streams=2, stream_header_seconds=HEADER_SECONDS))
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{app.port}",
                                              options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(4)]
        stubs = [batch_pb2_grpc.BatchServiceStub(c) for c in channels]
        loop = asyncio.get_running_loop()
        try:
            silent = [stubs[i % 4].BatchStream() for i in range(SILENT)]
            await asyncio.gather(*(call.wait_for_connection() for call in silent))
            silent_since = loop.time()

            codes: collections.Counter[grpc.StatusCode] = collections.Counter()
            sent: set[str] = set()
            acked: set[str] = set()

            async def one(tag: str) -> None:
                sent.add(tag)
                try:
                    await stubs[hash(tag) % 4].BatchExecute(batch([{"id": "c", "insert": {
                        "table": "customers", "rows": [{"name": tag, "email": f"{tag}@x"}]}}]),
                        timeout=30)
                    codes[grpc.StatusCode.OK] += 1
                    acked.add(tag)
                except grpc.aio.AioRpcError as err:
                    codes[err.code()] += 1

            restarted = asyncio.Event()

            async def waves() -> None:
                after = 0  # whole waves sent after the restart
                for w in range(MAX_WAVES):
                    if after >= 2:
                        return
                    started_after = restarted.is_set()
                    await asyncio.gather(*(one(f"w{w}-{i}") for i in range(WAVE)))
                    after += started_after

            load = asyncio.ensure_future(waves())
            try:
                await until(lambda: codes[grpc.StatusCode.OK] >= 2 * SLOTS,
                            what="calls answered before the restart")
                await restart_postgres(folder)
                restarted.set()
            finally:
                await asyncio.wait_for(load, 60)
            db = await asyncpg.connect(dsn)

            # After the restart, the silent streams still open: a well-behaved one gets in.
            call, _ = await open_stream(stubs[0], header(table="events"))
            assert (await send(call, rows_chunk(1, events(0, 10)))).ack.rows_written == 10
            assert (await send(call, COMMIT)).summary.committed
            assert loop.time() - silent_since < HEADER_SECONDS, "too slow to tell"
            assert not any(c.done() for c in silent)

            # No slot, no connection left behind: SLOTS batches are admitted at once and all
            # of them reach PostgreSQL (each on a connection of its own), then commit.
            await db.execute("SELECT pg_advisory_lock($1)", LOCK)
            try:
                blocked = [asyncio.ensure_future(stubs[i % 4].BatchExecute(
                    blocked_batch(f"slot{i}@x"), timeout=60)) for i in range(SLOTS)]
                await waiters(db, SLOTS)
            finally:
                await db.execute("SELECT pg_advisory_unlock($1)", LOCK)
            assert all(r.committed for r in await asyncio.gather(*blocked))

            ends = await asyncio.wait_for(asyncio.gather(*(ended_with(c) for c in silent)),
                                          HEADER_SECONDS + 20)
            assert set(ends) == {(grpc.StatusCode.DEADLINE_EXCEEDED, "STREAM_IDLE")}
            held = {r["name"] for r in await db.fetch(
                "SELECT name FROM customers WHERE name <> 'b'")}
            await db.close()
        finally:
            for channel in channels:
                await channel.close()
            await app.stop(grace=1)

    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED,
                          grpc.StatusCode.UNAVAILABLE}, codes
    assert codes[grpc.StatusCode.UNAVAILABLE] > 0, f"the restart failed no call: {codes}"
    assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] > 0, codes
    assert acked <= held <= sent  # every acknowledged insert is there, and nothing unsent
    print(f"\n{sum(codes.values())} calls: "
          + ", ".join(f"{code.name} {n}" for code, n in codes.most_common()))
