#!/usr/bin/env python3
"""A py-spy flame graph (SVG) of the batchd server under a named workload.

    .venv/bin/python scripts/profile.py WORKLOAD [--seconds 10] [--out FILE.svg]
                                        [--format flamegraph|raw|speedscope]
                                        [--table narrow|realistic] [--callers 64] [--rate 100]
                                        [--native] [--nonblocking] [--dsn DSN]

Starts embedded PostgreSQL (or uses --dsn: the benchmark tables are dropped and re-made) and
`batchd serve` on 127.0.0.1, drives WORKLOAD from this process for a one-second warm-up and
then --seconds more, while `py-spy record --format flamegraph --pid <batchd>` samples the
server for those --seconds; writes FILE.svg (default docs/profiles/WORKLOAD.svg), prints the
throughput reached while it recorded, stops everything. Only batchd is sampled: the client and
PostgreSQL share the machine (their CPU is what the server does not get).

Workloads:
  execute-10op     --callers concurrent 10-operation atomic BatchExecute calls (the batch of
                   scripts/bench_execute.py: customer, order, 6 items, update, get)
  coalesce-1000    one caller: one atomic batch of 1,000 one-row insert operations, repeated
  ingest-rows      one caller: atomic BatchStreams of 100,000 rows of --table, ROWS
  ingest-columnar  the same, COLUMNAR
  ingest-csv       the same, CSV
  ingest-arrow     the same, ARROW (once the protocol has ENCODING_ARROW)

py-spy needs ptrace rights on the server (root, or CAP_SYS_PTRACE, or
kernel.yama.ptrace_scope=0). By default it pauses the server at each sample (exact stacks; at
100 samples/s a small overhead); --nonblocking does not. --native adds C/C++/Cython frames
(protobuf, asyncpg's codecs, gRPC core).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench_common import ROOT, sql, start_postgres, start_server, stop_server
from bench_tables import SPECS, arrow_ipc_chunks, arrow_table, csv_chunks

WORKLOADS = ("execute-10op", "coalesce-1000", "ingest-rows", "ingest-columnar", "ingest-csv",
             "ingest-arrow")
STREAM_ROWS = 100_000


def ingest(target: str, dsn: str, table: str, encoding: str, chunk: int
           ) -> tuple[Callable[[], Awaitable[int]], str]:
    from bench_ingest import StreamFailed, stream, stream_requests

    from batchd.v1 import batch_pb2

    if encoding == "ARROW" and not hasattr(batch_pb2, "ENCODING_ARROW"):
        raise SystemExit("ingest-arrow: batchd's protocol has no ENCODING_ARROW yet")
    spec = SPECS[table]
    rows = spec.make(STREAM_ROWS)
    arrow = arrow_ipc_chunks(arrow_table(spec, rows), chunk) if encoding == "ARROW" else None
    requests = stream_requests(spec, encoding, rows, chunk, arrow=arrow,
                               csv=csv_chunks(spec, rows, chunk))

    async def unit() -> int:
        try:
            await stream(target, requests, len(rows))
        except StreamFailed as exc:
            raise SystemExit(f"the stream fails: {exc}") from None
        await sql(dsn, f"TRUNCATE {spec.name}")  # the table stays small
        return len(rows)
    return unit, "rows"


def execute(target: str, workload: str, callers: int
            ) -> tuple[list[Callable[[], Awaitable[int]]], str, list[Any]]:
    from bench_execute import TIMEOUT, channels_for, coalesce_requests, order_batch

    from batchd.v1 import batch_pb2_grpc

    channels = channels_for(target, min(4, callers))
    stubs = [batch_pb2_grpc.BatchServiceStub(ch) for ch in channels]
    request, per = (order_batch(), 10) if workload == "execute-10op" else \
        (coalesce_requests()[0], 1000)

    def make(i: int) -> Callable[[], Awaitable[int]]:
        async def unit() -> int:
            reply = await stubs[i % len(stubs)].BatchExecute(request, timeout=TIMEOUT)
            assert reply.committed
            return per
        return unit
    return [make(i) for i in range(callers)], "operations", channels


async def drive(units: list[Callable[[], Awaitable[int]]], until: float) -> int:
    async def loop(unit: Callable[[], Awaitable[int]]) -> int:
        done = 0
        while time.perf_counter() < until:
            done += await unit()
        return done
    return sum(await asyncio.gather(*(loop(u) for u in units)))


def size_kib(path: Path) -> float:
    return path.stat().st_size / 1024


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", help="default: docs/profiles/WORKLOAD.svg (.txt for raw, "
                                      ".json for speedscope)")
    parser.add_argument("--format", choices=["flamegraph", "raw", "speedscope"],
                        default="flamegraph", help="py-spy's output format (raw: collapsed "
                                                   "stacks, one line per stack with its count)")
    parser.add_argument("--table", choices=list(SPECS), default="narrow",
                        help="ingest workloads: the table (scripts/bench_tables.py)")
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--callers", type=int, default=64, help="execute-10op: callers")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="py-spy --native")
    parser.add_argument("--nonblocking", action="store_true", help="py-spy --nonblocking")
    parser.add_argument("--dsn")
    args = parser.parse_args()
    suffix = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}[args.format]
    out = Path(args.out or ROOT / "docs" / "profiles" / f"{args.workload}.{suffix}")
    out.parent.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        raise SystemExit("py-spy not found: .venv/bin/python -m pip install -e '.[bench]'")

    from bench_execute import TABLES_SQL

    dsn, embedded = start_postgres(args.dsn)
    server = spy = None
    channels: list[Any] = []
    try:
        await sql(dsn, TABLES_SQL)
        for spec in SPECS.values():
            await sql(dsn, spec.create_sql)
        server, target = await start_server(dsn)  # after the tables: it reads its catalog
        if args.workload.startswith("ingest-"):
            unit, what = ingest(target, dsn, args.table, args.workload.split("-")[1].upper(),
                                args.chunk)
            units = [unit]
        else:
            units, what, channels = execute(target, args.workload,
                                            args.callers if args.workload == "execute-10op"
                                            else 1)
        await drive(units, time.perf_counter() + 1.0)  # warm-up
        command = [str(py_spy), "record", "--format", args.format, "-o", str(out), "--pid",
                   str(server.pid), "--duration", str(max(1, round(args.seconds))),
                   "--rate", str(args.rate)]
        command += ["--native"] * args.native + ["--nonblocking"] * args.nonblocking
        print(" ".join(command[1:]), flush=True)
        spy = await asyncio.create_subprocess_exec(*command)
        started = time.perf_counter()
        done = await drive(units, started + args.seconds)
        elapsed = time.perf_counter() - started
        code = await asyncio.wait_for(spy.wait(), timeout=args.seconds + 60)
        if code != 0:
            raise SystemExit(f"py-spy exited with {code}")
        print(f"{args.workload}: {done / elapsed:,.0f} {what}/s while recording "
              f"({done:,} {what} in {elapsed:.1f} s); {out} "
              f"({size_kib(out):.0f} KiB)", flush=True)
    finally:
        if spy is not None and spy.returncode is None:
            spy.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(spy.wait(), timeout=10)
        for channel in channels:
            await channel.close()
        if server is not None:
            await stop_server(server)
        if embedded is not None:
            embedded.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
