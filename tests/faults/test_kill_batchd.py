"""`batchd serve` killed with SIGKILL: no drain, no goodbye. An atomic batch in flight leaves
nothing behind, and an ingest whose acknowledgements were lost resumes to exactly the rows,
counts and rejects the table holds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from batchd.v1 import batch_pb2_grpc
from tests.faults.conftest import BATCHD, Batchd, batchd_process, until
from tests.support.batches import no_open_transaction
from tests.support.cli import write_csv
from tests.support.locks import LOCK, blocked_batch, waiters
from tests.support.proxy import Proxy

pytestmark = pytest.mark.faults


async def batchd_transactions(db) -> int:
    return int(await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'batchd' "
        "AND backend_xid IS NOT NULL"))


async def test_sigkill_mid_atomic_batch_commits_nothing_and_the_request_id_stays_free(
        schema, db):
    request = blocked_batch("killed@x")
    request.request_id = "killed-mid-batch"
    async with batchd_process(schema) as server:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            await db.execute("SELECT pg_advisory_lock($1)", LOCK)
            try:
                in_flight = asyncio.ensure_future(stub.BatchExecute(request, timeout=60))
                await waiters(db, 1)  # inside PostgreSQL: the row inserted, the lock awaited
                assert await batchd_transactions(db) >= 1
                await server.kill()
                with pytest.raises(grpc.aio.AioRpcError) as lost:
                    await asyncio.wait_for(in_flight, 30)
                assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
            finally:
                # The orphaned backend waits on the lock; released, it finds its client gone
                # and rolls back.
                await db.execute("SELECT pg_advisory_unlock($1)", LOCK)
    await no_open_transaction(db)
    assert await db.fetchval("SELECT count(*) FROM customers") == 0
    assert await db.fetchval("SELECT count(*) FROM batchd.requests WHERE request_id = $1",
                             request.request_id) == 0
    # The client retries with the same id on a new server: it runs, once.
    async with batchd_process(schema) as server:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            response = await stub.BatchExecute(request, timeout=30)
            assert response.committed and not response.replayed
            assert (await stub.BatchExecute(request, timeout=30)).replayed
    assert [r["email"] for r in await db.fetch("SELECT email FROM customers")] == ["killed@x"]


ROWS = 6000
CHUNK = 50


async def run_ingest(data: Path, target: str, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(BATCHD), "ingest", str(data), "--table", "events", "--chunk-rows", str(CHUNK),
        "--quiet", "--target", target, *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


async def test_sigkill_mid_ingest_with_lost_acks_resumes_to_exact_rows_counts_and_rejects(
        schema, db, tmp_path):
    """Chunks committed whose acks never arrived, then the server is killed mid stream (and the
    client, which would wait for ever). A new server on the same port, the same command again:
    the ledger answers for the committed chunks, the rest is written, and the summary, the exit
    code and the rejects file say exactly what the table holds."""
    bad = {i: f"{i},,1" for i in range(ROWS) if i % 37 == 5}  # one or two in every chunk
    data = write_csv(tmp_path / "killed.csv", ROWS, bad=bad)
    state_path = tmp_path / "killed.csv.batchd-ingest.json"
    rejects_path = tmp_path / "killed.csv.rejects.jsonl"
    server = await Batchd(schema).start()
    proxy = await Proxy.tcp("127.0.0.1", server.port)
    try:
        cli = await run_ingest(data, f"127.0.0.1:{proxy.port}", "--rate", "4000")
        try:
            await until(lambda: json.loads(state_path.read_text())["sequence"] >= 3,
                        what="three acknowledged chunks")
            proxy.drop_replies = True  # the server's acks are lost from now on
            acked = json.loads(state_path.read_text())

            async def committed_past_the_acks() -> bool:
                # Two chunks beyond what the client last heard of (each chunk writes >= 48).
                count = await db.fetchval("SELECT count(*) FROM events")
                return int(count) >= acked["written"] + 2 * CHUNK
            await until(committed_past_the_acks, what="chunks committed without their acks")
            await server.kill()
        finally:
            cli.kill()
            await asyncio.wait_for(cli.wait(), 30)
        saved = json.loads(state_path.read_text())
        committed = await db.fetchval("SELECT count(*) FROM events")
        assert saved["written"] < committed < ROWS - len(bad)  # killed mid stream, acks behind
        assert not saved["finished"]
        await no_open_transaction(db)

        proxy.drop_replies = False
        server = await Batchd(schema, port=server.port).start()  # the same address
        cli = await run_ingest(data, f"127.0.0.1:{proxy.port}")
        out = (await asyncio.wait_for(cli.communicate(), 60))[0].decode()
    finally:
        await server.kill()
        await proxy.close()
    expected = ROWS - len(bad)
    assert cli.returncode == 3, out
    assert "resuming" in out and f"{expected:,} rows written" in out, out
    assert "the server has chunks up to" in out, out  # the ledger knew of the unacked ones
    assert f"{len(bad):,} rejected" in out, out
    rejects = [json.loads(line) for line in rejects_path.read_text().splitlines()]
    assert sorted(r["row"] for r in rejects) == sorted(bad)  # each bad row, once
    assert all(r["record"] == bad[r["row"]] and r["code"] == "INVALID_ARGUMENT"
               for r in rejects)
    ids = [r["id"] for r in await db.fetch("SELECT id FROM events ORDER BY id")]
    assert ids == [i for i in range(ROWS) if i not in bad]
    state = json.loads(state_path.read_text())
    assert state["finished"] and (state["written"], state["rejected"]) == (expected, len(bad))
