"""A proxy between batchd and PostgreSQL (tests/support/proxy.py) breaks the network under load: cut
(every connection reset, connects refused) and blackholed (connections kept open, nothing
forwarded). Calls fail cleanly and within their bound, nothing is half-applied, and batchd
recovers by itself once the network is back, without a restart."""

from __future__ import annotations

import asyncio
import collections
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from batchd.app import App
from batchd.db.pool import RELEASE_SECONDS
from batchd.v1 import batch_pb2_grpc
from tests.faults.conftest import until
from tests.support.batches import batch, no_open_transaction
from tests.support.proxy import Proxy
from tests.support.servers import make_settings

pytestmark = pytest.mark.faults


@asynccontextmanager
async def behind_proxy(schema: str, **settings: Any,
                       ) -> AsyncIterator[tuple[Proxy, batch_pb2_grpc.BatchServiceStub]]:
    """batchd (in process) reaching PostgreSQL through a proxy, and a client of it."""
    with tempfile.TemporaryDirectory(prefix="batchd-proxy-") as workdir:  # a short socket path
        proxy, via_proxy = await Proxy.for_dsn(schema, Path(workdir))
        app = await App.start(make_settings(via_proxy, **settings))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        try:
            yield proxy, batch_pb2_grpc.BatchServiceStub(channel)
        finally:
            proxy.cut()  # first: a pool holding frozen connections would wait for them
            await channel.close()
            await app.stop(grace=1)
            await proxy.close()


def pair(tag: str):
    """An atomic batch of two rows: both or neither."""
    return batch([{"id": "c", "insert": {"table": "customers", "rows": [
        {"name": tag, "email": f"{tag}-a@x"}, {"name": tag, "email": f"{tag}-b@x"}]}}])


@dataclass
class Call:
    tag: str
    began: str  # the phase when it was sent
    ended: str  # the phase when its answer came
    code: grpc.StatusCode


def codes_named(codes: collections.Counter[grpc.StatusCode]) -> dict[str, int]:
    return {code.name: n for code, n in codes.most_common()}


async def rows_by_tag(db) -> dict[str, int]:
    await no_open_transaction(db)
    return {r["name"]: r["n"] for r in await db.fetch(
        "SELECT name, count(*) AS n FROM customers GROUP BY name")}


WORKERS = 8


@pytest.mark.timeout(90)
async def test_cut_connections_fail_calls_with_unavailable_and_batchd_recovers_without_restart(
        schema, db):
    async with behind_proxy(schema, pool_max_size=8) as (proxy, stub):
        phase = "before"
        calls: list[Call] = []
        stop = asyncio.Event()

        async def worker(w: int) -> None:
            for n in range(10_000):
                if stop.is_set():
                    return
                tag, began = f"w{w}-{n}", phase
                try:
                    await stub.BatchExecute(pair(tag), timeout=10)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as err:
                    code = err.code()
                calls.append(Call(tag, began, phase, code))
                if code != grpc.StatusCode.OK:
                    await asyncio.sleep(0.01)  # a failing call is fast: don't spin

        def answered(code: grpc.StatusCode, within: str) -> int:
            return sum(c.code == code and c.began == c.ended == within for c in calls)

        workers = asyncio.gather(*(worker(w) for w in range(WORKERS)))
        try:
            await until(lambda: answered(grpc.StatusCode.OK, "before") >= 40,
                        what="calls answered before the cut")
            proxy.cut()
            phase = "cut"
            await until(lambda: sum(c.began == c.ended == "cut" for c in calls) >= 40,
                        what="calls made during the cut")
            await proxy.restore()
            phase = "after"
            await until(lambda: answered(grpc.StatusCode.OK, "after") >= 40, patience=30,
                        what="calls succeeding once the network is back")
        finally:
            stop.set()
            await asyncio.wait_for(workers, 30)

    during = collections.Counter(c.code for c in calls if c.began == c.ended == "cut")
    assert set(during) == {grpc.StatusCode.UNAVAILABLE}, during
    # A call caught by the cut may also have committed before its reply was lost, or have
    # failed: anything else (INTERNAL, UNKNOWN, ...) is not an answer a client can act on.
    codes = collections.Counter(c.code for c in calls)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    # After the restore, once the pool has found its connections gone, every call succeeds.
    after = [c for c in calls if c.began == "after"]
    first_ok = next(i for i, c in enumerate(after) if c.code == grpc.StatusCode.OK)
    late = collections.Counter(c.code for c in after[first_ok + WORKERS:])
    assert set(late) == {grpc.StatusCode.OK}, late
    # Nothing half-applied: every batch has both of its rows or neither, and an acknowledged
    # one both.
    held = await rows_by_tag(db)
    assert set(held.values()) <= {2}, {t: n for t, n in held.items() if n != 2}
    assert {c.tag for c in calls if c.code == grpc.StatusCode.OK} <= set(held)
    assert set(held) <= {c.tag for c in calls}
    print(f"\n{len(calls)} calls: {codes_named(codes)}; during the cut: {codes_named(during)}")


# The blackhole: every connection open when it starts (the pool's), and every one opened while
# it lasts, is frozen for good; new connections work again once it ends.
POOL = 3
MAX_BATCH_SECONDS = 2.0
SLACK = 1.5  # scheduling on a loaded 2-core machine


async def timed(stub, tag: str, deadline: float | None,
                bound: float) -> tuple[grpc.StatusCode | str, float]:
    """A call (with a ``deadline`` in seconds, or none): its code and duration, or "STILL
    RUNNING" if it outlived ``bound`` seconds."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        await asyncio.wait_for(stub.BatchExecute(pair(tag), timeout=deadline), bound)
        code: grpc.StatusCode | str = grpc.StatusCode.OK
    except grpc.aio.AioRpcError as err:
        code = err.code()
    except TimeoutError:
        code = "STILL RUNNING"
    return code, loop.time() - began


@pytest.mark.timeout(60)
async def test_a_call_over_a_blackholed_database_ends_within_its_deadline_and_frees_its_slot(
        schema, db):
    async with behind_proxy(schema, max_batch_seconds=MAX_BATCH_SECONDS, pool_min_size=POOL,
                            pool_max_size=POOL) as (proxy, stub):
        assert (await stub.BatchExecute(pair("warm"), timeout=10)).committed
        proxy.blackhole()
        # The deadline, then at most RELEASE_SECONDS to give the dead connection back (it is
        # terminated instead), then scheduling.
        bound = MAX_BATCH_SECONDS + RELEASE_SECONDS + SLACK
        # No deadline, and a deadline later than max_batch_seconds: the server's bound holds
        # both; the pool's connections are all frozen.
        results = await asyncio.gather(*(timed(stub, f"bh{i}", 30 if i % 2 else None, bound)
                                         for i in range(POOL)))
        assert all(code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
                   and seconds <= bound for code, seconds in results), results
        proxy.end_blackhole()
        # The slots of those calls are free again at once: a new call gets a new connection.
        code, seconds = await timed(stub, "after", 10, bound)
        assert code == grpc.StatusCode.OK, (code, seconds)
    assert set(await rows_by_tag(db)) == {"warm", "after"}


STATEMENT_TIMEOUT_MS = 3000  # asyncpg's command_timeout is this + 5 s


@pytest.mark.timeout(60)
async def test_after_a_blackhole_the_pool_replaces_stuck_connections_without_restart(
        schema, db):
    async with behind_proxy(schema, max_batch_seconds=MAX_BATCH_SECONDS, pool_min_size=POOL,
                            pool_max_size=POOL,
                            statement_timeout_ms=STATEMENT_TIMEOUT_MS) as (proxy, stub):
        assert (await stub.BatchExecute(pair("warm"), timeout=10)).committed
        proxy.blackhole()
        # Every pool connection is frozen, with a call stuck on it. Those calls end by the
        # client-side bound on a dead connection at the latest.
        stuck_bound = STATEMENT_TIMEOUT_MS / 1000 + 5 + MAX_BATCH_SECONDS + SLACK
        results = await asyncio.gather(*(timed(stub, f"bh{i}", None, stuck_bound)
                                         for i in range(POOL)))
        assert all(code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
                   for code, _ in results), results
        # Still blackholed: new calls fail within the server's bound, never hang.
        code, seconds = await timed(stub, "still", None, MAX_BATCH_SECONDS + SLACK)
        assert code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE), code
        proxy.end_blackhole()
        # The network is back (the frozen connections are not): the pool has let go of them
        # and opens new ones; calls succeed, the same process, no restart.
        for n in range(3):
            code, seconds = await timed(stub, f"after{n}", 10, MAX_BATCH_SECONDS + SLACK)
            assert code == grpc.StatusCode.OK, (n, code, seconds)
    held = await rows_by_tag(db)
    assert set(held) == {"warm", "after0", "after1", "after2"} and set(held.values()) == {2}
