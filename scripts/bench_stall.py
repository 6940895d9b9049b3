#!/usr/bin/env python3
"""Event-loop stalls: health-check latency while one big BatchExecute runs.

    .venv/bin/python scripts/bench_stall.py [--rows 100000] [--runs 3] [--dsn DSN]

One PostgreSQL (embedded by default), one `batchd serve` process. A caller process sends one
atomic batch inserting --rows rows (12 columns, the table below, RETURNING the key) while this
process checks gRPC health every 5 ms on its own channel, from the caller's start until it
exits; the health latencies are summarized (p50, p99, max). A health check is an empty unary
call that only the server's event loop delays: its tail is the longest time the loop did not
run (the caller is a process of its own, so that parsing its large answer is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))
from bench_common import sql, start_postgres, start_server, stop_server

from batchd.client.builder import Batch
from batchd.v1 import batch_pb2_grpc

TABLE_SQL = """
DROP TABLE IF EXISTS stall_rows;
CREATE TABLE stall_rows (id bigserial PRIMARY KEY, a text, b text, c bigint, d numeric,
    e timestamptz, f boolean, g jsonb, h uuid, i integer, j text, k double precision);
"""


def request(rows: int) -> object:
    b = Batch()
    b.insert("stall_rows", [{"a": f"a{i}", "b": "b", "c": str(i), "d": "1.5",
                             "e": "2026-01-01T00:00:00Z", "f": True, "g": {"k": i},
                             "h": "00000000-0000-0000-0000-000000000001", "i": i, "j": "j",
                             "k": 0.5} for i in range(rows)])
    return b.to_request()


def insert_in_this_process(target: str, rows: int) -> None:
    """The big call, from a process of its own (``--insert``): parsing its 100,000-row answer
    must not delay the prober's event loop, or the figures would be the client's stalls."""
    import grpc as sync_grpc

    channel = sync_grpc.insecure_channel(target, options=[
        ("grpc.max_send_message_length", 256 << 20),
        ("grpc.max_receive_message_length", 256 << 20)])
    response = batch_pb2_grpc.BatchServiceStub(channel).BatchExecute(request(rows))
    assert response.committed and len(response.results[0].rows) == rows
    print("ok", flush=True)


async def one_run(target: str, rows: int) -> list[float]:
    async with grpc.aio.insecure_channel(target, options=[
            ("grpc.use_local_subchannel_pool", 1)]) as small:
        health = health_pb2_grpc.HealthStub(small)
        await health.Check(health_pb2.HealthCheckRequest())
        inserter = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--insert", target, "--rows", str(rows),
            stdout=asyncio.subprocess.PIPE)
        latencies = []
        # Probing starts when the inserter has built its request and sent it: the server
        # reports the call in flight (its batchd_in_flight gauge would be a cleaner signal;
        # this waits for the process to be past its start-up, then probes until it exits).
        while inserter.returncode is None:
            started = time.perf_counter()
            await health.Check(health_pb2.HealthCheckRequest())
            latencies.append(time.perf_counter() - started)
            try:
                await asyncio.wait_for(inserter.wait(), 0.005)
            except TimeoutError:
                pass
        assert inserter.stdout is not None
        assert (await inserter.stdout.read()).strip() == b"ok", "the insert failed"
        return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dsn")
    parser.add_argument("--insert", metavar="TARGET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.insert:
        insert_in_this_process(args.insert, args.rows)
        return
    dsn, embedded = start_postgres(args.dsn)
    await sql(dsn, TABLE_SQL)
    import os
    os.environ["BATCHD_MAX_MESSAGE_BYTES"] = str(256 << 20)
    proc, target = await start_server(dsn)
    try:
        for run in range(args.runs):
            lat = sorted(await one_run(target, args.rows))
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(f"run {run + 1}: {len(lat)} health checks during a {args.rows:,}-row insert: "
                  f"p50 {statistics.median(lat) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
                  f"max {lat[-1] * 1000:.1f} ms", flush=True)
    finally:
        await stop_server(proc)
        if embedded is not None:
            embedded.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
