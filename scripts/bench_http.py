#!/usr/bin/env python3
"""HTTP edge benchmark: BatchExecute over Connect (JSON, binary) against the same batch over
gRPC, and the curl ingest against the gRPC CSV stream of the same file; and batchd's peak
memory for a large curl upload.

    .venv/bin/python scripts/bench_http.py [--seconds 10] [--callers 64] [--rows 1000000]
                                           [--runs 3] [--memory-gb 0] [--dsn DSN]
                                           [--markdown-out FILE]

One PostgreSQL (embedded by default) and one ``batchd serve`` with its HTTP port, in their own
processes. BatchExecute: scripts/bench_execute.py's 10-operation atomic batch, N callers
looping for --seconds after a short warm-up (one run each, as the issue asks): over gRPC (4
channels), over Connect JSON and Connect binary (connectrpc's client, HTTP/1.1 keep-alive).
Ingest: a CSV file of --rows rows (id, kind, score) into an unlogged
table, ATOMIC, --runs times each, median: ``curl -T FILE .../v1/ingest/TABLE`` against the
gRPC BatchStream of the same bytes in 10,000-row CSV chunks. --memory-gb N: write an N GB CSV
file, curl it (INDEPENDENT), report batchd's peak RSS (VmHWM) before and after.

The client, batchd and PostgreSQL share this machine's cores: the ratios are what one machine
shows, not a capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (
    CpuMeter,
    peak_rss_mib,
    postgres_line,
    postmaster,
    sql,
    start_postgres,
    start_server,
    stop_server,
    write_markdown,
)
from bench_execute import TABLES_SQL, channels_for, measure, order_batch

INGEST_SQL = """
DROP TABLE IF EXISTS bench_http_rows;
CREATE UNLOGGED TABLE bench_http_rows (id bigint NOT NULL, kind text NOT NULL, score integer)
"""
CHUNK_ROWS = 10_000


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_csv(path: Path, rows: int) -> int:
    """``rows`` rows (with a header line), written a block at a time; the file's size."""
    block = 100_000
    with path.open("w") as f:
        f.write("id,kind,score\n")
        for start in range(0, rows, block):
            f.write("".join(f"{i},kind-{i % 97},{i % 1000}\n"
                            for i in range(start, min(rows, start + block))))
    return path.stat().st_size


async def execute(grpc_target: str, http_url: str, callers: int, seconds: float,
                  meter: CpuMeter) -> dict[str, Any]:
    from batchd.v1 import batch_pb2, batch_pb2_grpc

    request = order_batch()
    results: dict[str, Any] = {}

    channels = channels_for(grpc_target, 4)
    stubs = [batch_pb2_grpc.BatchServiceStub(ch) for ch in channels]

    def grpc_unit(i: int) -> Any:
        async def unit() -> int:
            reply = await stubs[i % len(stubs)].BatchExecute(request, timeout=60)
            assert reply.committed
            return 10
        return unit

    results["gRPC"] = await measure(callers, seconds, grpc_unit, 2.0, meter)
    for channel in channels:
        await channel.close()

    # connectrpc's own client (Rust HTTP underneath: pyqwest), no compression, no client-side
    # tracing: a Python client light enough not to be what is measured (httpx's pool spends
    # more CPU per call than batchd does). HTTP/1.1: a keep-alive connection per call in
    # flight. (pyqwest's HTTP/2 without TLS did not complete a call against Hypercorn here,
    # though curl --http2-prior-knowledge and grpc do: HTTP/2 is left out.)
    from connectrpc.client import ConnectClient
    from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
    from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
    from pyqwest import Client, HTTPTransport, HTTPVersion

    method = MethodInfo(name="BatchExecute", service_name="batchd.v1.BatchService",
                        input=batch_pb2.BatchExecuteRequest,
                        output=batch_pb2.BatchExecuteResponse,
                        idempotency_level=IdempotencyLevel.UNKNOWN, stream_type=StreamType.UNARY)
    for version in (HTTPVersion.HTTP1,):
        for name, codec in (("Connect JSON", google_protobuf_json_codec()),
                            ("Connect binary", google_protobuf_binary_codec())):
            transport = HTTPTransport(http_version=version, enable_otel=False,
                                      enable_gzip=False, enable_brotli=False,
                                      enable_zstd=False)
            http = Client(transport)
            label = f"{name}, HTTP/{'1.1' if version == HTTPVersion.HTTP1 else '2'}"
            async with ConnectClient(http_url, codec=codec, send_compression=None,
                                     accept_compression=(), http_client=http) as client:
                def http_unit(i: int, client: Any = client) -> Any:
                    async def unit() -> int:
                        reply = await client.execute_unary(request=request, method=method,
                                                           timeout_ms=60_000)
                        assert reply.committed
                        return 10
                    return unit

                results[label] = await measure(callers, seconds, http_unit, 2.0, meter)
    return results


async def grpc_csv_stream(target: str, path: Path) -> float:
    """The file's bytes as one ATOMIC BatchStream of CSV chunks of CHUNK_ROWS records."""
    import grpc

    from batchd.v1 import batch_pb2

    def requests() -> Any:
        yield batch_pb2.BatchStreamRequest(header=batch_pb2.StreamHeader(
            table="bench_http_rows", columns=["id", "kind", "score"],
            encoding=batch_pb2.ENCODING_CSV))
        with path.open("rb") as f:
            f.readline()
            sequence = 1
            while True:
                lines = [line for _, line in zip(range(CHUNK_ROWS), f, strict=False)]
                if not lines:
                    break
                yield batch_pb2.BatchStreamRequest(chunk=batch_pb2.StreamChunk(
                    sequence=sequence, csv=b"".join(lines)))
                sequence += 1
        yield batch_pb2.BatchStreamRequest(commit=batch_pb2.StreamCommit())

    async with grpc.aio.insecure_channel(target, options=[
            ("grpc.max_send_message_length", 64 << 20)]) as channel:
        from batchd.v1 import batch_pb2_grpc

        started = time.perf_counter()
        call = batch_pb2_grpc.BatchServiceStub(channel).BatchStream(requests(), timeout=3600)
        summary = None
        async for response in call:
            if response.WhichOneof("kind") == "summary":
                summary = response.summary
        elapsed = time.perf_counter() - started
    assert summary is not None and summary.committed, summary
    return elapsed


def curl_ingest(url: str, path: Path, mode: str = "atomic") -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(["curl", "-sS", "--fail-with-body", "-T", str(path),
                          f"{url}/v1/ingest/bench_http_rows?mode={mode}"],
                         check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - started, out


async def ingest(dsn: str, grpc_target: str, http_url: str, rows: int,
                 runs: int) -> dict[str, list[float]]:
    folder = Path(tempfile.mkdtemp(prefix="batchd-bench-http-"))
    try:
        path = folder / "rows.csv"
        size = write_csv(path, rows)
        print(f"ingest: {rows:,} rows, {size / 2**20:.0f} MiB of CSV", flush=True)
        found: dict[str, list[float]] = {"gRPC CSV stream": [], "curl -T (HTTP)": []}
        for _ in range(runs):
            await sql(dsn, "TRUNCATE bench_http_rows; CHECKPOINT")
            found["gRPC CSV stream"].append(rows / await grpc_csv_stream(grpc_target, path))
            await sql(dsn, "TRUNCATE bench_http_rows; CHECKPOINT")
            seconds, _ = await asyncio.to_thread(curl_ingest, http_url, path)
            found["curl -T (HTTP)"].append(rows / seconds)
            assert await sql(dsn, "SELECT count(*) FROM bench_http_rows") == rows
        return found
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def memory(dsn: str, pid: int, http_url: str, gigabytes: float) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="batchd-bench-http-"))
    try:
        path = folder / "big.csv"
        rows = int(gigabytes * 2**30 / 20.6)  # ~20.6 bytes a row of write_csv's
        size = await asyncio.to_thread(write_csv, path, rows)
        await sql(dsn, "TRUNCATE bench_http_rows; CHECKPOINT")
        before = peak_rss_mib(pid)
        seconds, _ = await asyncio.to_thread(curl_ingest, http_url, path, "independent")
        after = peak_rss_mib(pid)
        return {"body_mib": size / 2**20, "rows": rows, "seconds": seconds,
                "peak_before_mib": before, "peak_after_mib": after}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(setting: str, args: argparse.Namespace, executed: dict[str, Any],
           ingested: dict[str, list[float]], mem: dict[str, float] | None) -> str:
    lines = [f"*{setting}*"]
    if executed:
        lines += ["", f"BatchExecute, 10-operation atomic batch, {args.callers} callers, one run "
                      f"of {args.seconds:g} s each:", "",
                  "| transport | ops/s | batches/s | p50 ms | p99 ms | vs gRPC | cores: batchd, "
                  "client, PostgreSQL |",
                  "|---|---:|---:|---:|---:|---:|---|"]
    base = executed["gRPC"].ops_s if "gRPC" in executed else 0
    for name, sample in executed.items():
        cpu = ", ".join(f"{sample.cpu.get(k, 0):.2f}" for k in ("batchd", "client", "postgres"))
        lines.append(f"| {name} | {sample.ops_s:,.0f} | {sample.batches_s:,.0f} | "
                     f"{sample.p50_ms:.1f} | {sample.p99_ms:.1f} | "
                     f"{sample.ops_s / base:.2f}x | {cpu} |")
    if ingested:
        grpc_rate = statistics.median(ingested["gRPC CSV stream"])
        lines += ["", f"Ingest of the same CSV file ({args.rows:,} rows, ATOMIC), median of "
                      f"{args.runs}:", "", "| path | rows/s | vs gRPC |", "|---|---:|---:|"]
        for name, rates in ingested.items():
            rate = statistics.median(rates)
            lines.append(f"| {name} | {rate:,.0f} | {rate / grpc_rate:.2f}x |")
    if mem:
        lines += ["", f"curl -T of a {mem['body_mib']:,.0f} MiB CSV ({mem['rows']:,} rows, "
                      f"INDEPENDENT) in {mem['seconds']:.0f} s: batchd's peak RSS "
                      f"{mem['peak_before_mib']:.0f} MiB before, {mem['peak_after_mib']:.0f} "
                      "MiB after"]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--rows", type=int, default=1_000_000, help="ingest rows (0: none)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-gb", type=float, default=0.0,
                        help="also curl a CSV file of this many GB and report peak RSS")
    parser.add_argument("--skip-execute", action="store_true")
    parser.add_argument("--dsn")
    parser.add_argument("--markdown-out")
    args = parser.parse_args()

    dsn, embedded = start_postgres(args.dsn)
    await sql(dsn, TABLES_SQL + ";" + INGEST_SQL)
    setting = await postgres_line(dsn, embedded)
    http_port = free_port()
    proc, target = await start_server(dsn, http_port=http_port)
    http_url = f"http://127.0.0.1:{http_port}"
    try:
        meter = CpuMeter({"batchd": proc.pid, "client": os.getpid()}, await postmaster(dsn))
        executed = {} if args.skip_execute else await execute(
            target, http_url, args.callers, args.seconds, meter)
        ingested = await ingest(dsn, target, http_url, args.rows, args.runs) if args.rows \
            else {}
        mem = await memory(dsn, proc.pid, http_url, args.memory_gb) if args.memory_gb \
            else None
    finally:
        await stop_server(proc)
        if embedded is not None:
            embedded.cleanup()
    text = report(setting, args, executed, ingested, mem)
    print(text)
    write_markdown(args.markdown_out, text)


if __name__ == "__main__":
    asyncio.run(main())
