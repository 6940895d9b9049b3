"""PostgreSQL restarted under 16 concurrent clients sending idempotent ATOMIC batches, each
retrying with the same request id until it gets an answer; then the history is checked against
the table: every acknowledged batch exactly once, every batch all or nothing."""

from __future__ import annotations

import asyncio
import collections

import asyncpg
import grpc
import pytest

from batchd.app import App
from batchd.v1 import batch_pb2_grpc
from tests.faults.conftest import until
from tests.support.batches import BatchFailure, batch
from tests.support.postgres import own_postgres, restart_postgres
from tests.support.servers import make_settings

pytestmark = pytest.mark.faults

CLIENTS = 16
ROWS = 3  # per batch, tagged with its request id
BEFORE_RESTART = 48  # batches answered before PostgreSQL is restarted
AFTER_RESTART = 3  # each client's batches answered after it is back
MAX_BATCHES = 40  # per client
ATTEMPTS = 40  # per batch
CALL_SECONDS = 5.0
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.ABORTED}


def tagged_batch(request_id: str):
    return batch([{"id": "rows", "insert": {"table": "tagged", "rows": [
        {"request_id": request_id, "n": n} for n in range(ROWS)]}}], request_id=request_id)


@pytest.mark.timeout(150)
async def test_postgresql_restart_under_idempotent_clients_keeps_each_acked_batch_once_and_whole():
    async with own_postgres() as (dsn, folder):
        setup = await asyncpg.connect(dsn)
        await setup.execute("CREATE TABLE tagged (id bigserial PRIMARY KEY, "
                            "request_id text NOT NULL, n integer NOT NULL)")
        await setup.close()
        app = await App.start(make_settings(dsn, demo_schema=False, handler_modules=[],
                                            tables={}))
        history: dict[str, str] = {}  # request id -> final answer: OK, a code, or GAVE_UP
        errors: collections.Counter[tuple[str, str]] = collections.Counter()  # (code, reason)
        replayed = 0
        restarted = asyncio.Event()
        loop = asyncio.get_running_loop()
        ends = loop.time() + 90
        try:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
            stub = batch_pb2_grpc.BatchServiceStub(channel)

            async def answer_of(request_id: str) -> str:
                nonlocal replayed
                request = tagged_batch(request_id)
                for attempt in range(ATTEMPTS):
                    try:
                        response = await stub.BatchExecute(request, timeout=CALL_SECONDS)
                        replayed += response.replayed
                        return "OK"
                    except grpc.aio.AioRpcError as err:
                        reason = BatchFailure(err).error_info.get("reason", "") \
                            if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED else ""
                        errors[err.code().name, reason] += 1
                        if err.code() not in RETRYABLE or loop.time() > ends:
                            return err.code().name
                    await asyncio.sleep(min(0.02 * 2 ** attempt, 0.5))  # backoff, not a race
                return "GAVE_UP"

            async def client(c: int) -> None:
                after = 0
                for n in range(MAX_BATCHES):
                    if (restarted.is_set() and after >= AFTER_RESTART) or loop.time() > ends:
                        return
                    started_after = restarted.is_set()
                    history[f"c{c}-{n}"] = await answer_of(f"c{c}-{n}")
                    after += started_after and history[f"c{c}-{n}"] == "OK"

            clients = asyncio.gather(*(client(c) for c in range(CLIENTS)))
            try:
                await until(lambda: sum(a == "OK" for a in history.values()) >= BEFORE_RESTART,
                            what="batches answered before the restart")
                await restart_postgres(folder)  # fast shutdown: in-flight work is cut
                restarted.set()
            finally:
                await asyncio.wait_for(clients, 120)
            await channel.close()
        finally:
            await app.stop(grace=1)

        check = await asyncpg.connect(dsn)
        try:
            stored = {r["request_id"]: r["rows"] for r in await check.fetch(
                "SELECT request_id, array_agg(n ORDER BY n) AS rows FROM tagged "
                "GROUP BY request_id")}
            answers = {r["request_id"] for r in await check.fetch(
                "SELECT request_id FROM batchd.requests WHERE response IS NOT NULL")}
        finally:
            await check.close()

    unexpected = {k: v for k, v in errors.items()
                  if k[0] not in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
                  and k != ("ABORTED", "REQUEST_IN_PROGRESS")}
    assert not unexpected, f"codes no client should see: {unexpected}"
    assert errors, "the restart cut no call: nothing was tested"
    assert len(history) >= BEFORE_RESTART + CLIENTS * AFTER_RESTART
    assert {rid for rid, answer in history.items() if answer != "OK"} == set(), history
    # Every acknowledged batch exactly once, with all of its rows and its stored answer; no
    # rows of a batch nobody sent, none twice, none partial.
    assert set(stored) == set(history)
    assert all(rows == list(range(ROWS)) for rows in stored.values()), stored
    assert answers == set(history)
    print(f"\n{len(history)} batches, errors retried: {dict(errors)}, replayed: {replayed}")
